"""Layering: ``opensora_dual/`` is framework-free and test-free. The twins (``pt_reference``, ``ms_impl``),
``converters``, ``scripts`` and the tests may import ``opensora_dual``; never the reverse.

Every ``.py`` file under ``opensora_dual/`` is parsed with ``ast`` and every ``import`` / ``from ... import``
statement -- at module level or inside a function, class or ``if`` block -- is checked: none may name torch,
mindspore, pt_reference, ms_impl, parity_tests or scripts (nor one of their sub-modules).

Allowed on purpose: ``opensora_dual/registry.py`` resolves twin code by *string* at run time
(``BACKENDS = {"pt": "pt_reference", "ms": "ms_impl"}`` + ``importlib.import_module``, used by
``Family.model_class`` and ``twin_module``). That lookup table is how framework-free code names "the same
class / module in the backend the user picked" without depending on either backend; it is not an import
statement, so this test does not see it. Backend-specific behaviour otherwise comes in by dependency
injection (e.g. ``TextEmbedder(..., encode_tokens=...)``) or as data (e.g. ``parity_case["skip_rows"]``).
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "opensora_dual")
FORBIDDEN = ("torch", "mindspore", "pt_reference", "ms_impl", "parity_tests", "scripts")


def _forbidden(module: str) -> bool:
    top = module.split(".", 1)[0]
    return top in FORBIDDEN


def imported_names(tree: ast.AST):
    """(line, module) for every import statement anywhere in ``tree``; relative imports are package-internal."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.lineno, node.module


def violations(package=PACKAGE):
    found = []
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            path = os.path.join(dirpath, fn)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), filename=path)
            for line, module in imported_names(tree):
                if _forbidden(module):
                    found.append(f"{os.path.relpath(path, ROOT)}:{line}: imports {module}")
    return found


def test_opensora_dual_imports_no_framework_twin_or_test_code():
    bad = violations()
    assert not bad, ("opensora_dual/ must stay framework-free and test-free (twins, scripts and tests import "
                     "it, never the reverse):\n  " + "\n  ".join(bad))


def test_the_checker_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ok.py").write_text("import numpy as np\nfrom . import torch_free\nimport torchvision_like_name\n")
    (pkg / "bad.py").write_text(
        "import os\n"
        "def f():\n"
        "    import mindspore as ms\n"
        "    from parity_tests.engine import default_row_level\n"
        "class C:\n"
        "    def g(self):\n"
        "        if True:\n"
        "            import torch.nn\n"
        "            from ms_impl.layers import set_compute_dtype\n"
        "from pt_reference.models import x\n"
        "import scripts.demo\n")
    got = sorted(v.split(": imports ")[1] for v in violations(str(pkg)))
    assert got == ["mindspore", "ms_impl.layers", "parity_tests.engine", "pt_reference.models", "scripts.demo",
                   "torch.nn"]
