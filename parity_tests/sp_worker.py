"""One rank of the sequence-parallel parity test (launched by ``msrun`` from test_sequence_parallel.py).

    python parity_tests/sp_worker.py RELEASE_FOLDER INPUTS.npz OUT_PREFIX [INPUTS2.npz OUT_PREFIX2 ...] [--graph]

Builds the MindSpore twin of the release folder's model (its config.json names the family: STDiT3, MMDiT) with
sequence parallelism on over the job's ranks (the constructor's ``enable_sequence_parallelism=True`` where the
constructor has it, else ``set_sequence_parallel()``), runs each input file through it (keyword arguments of
the forward) and writes OUT_PREFIX.rank<N>.npz: ``out``, ``sp_size`` and ``tokens`` (the token count each
rank's first block really receives). With ``--graph`` the same inputs also go through ``ms.jit`` of the
forward (``out_graph``).
"""
import inspect
import json
import os
import sys

import numpy as np
import mindspore as ms
from mindspore.communication import get_rank, init

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the block list whose first block's token count shows the split (first output for blocks returning a tuple)
FIRST_BLOCK = {"stdit3": "spatial_blocks", "mmdit": "double_blocks"}


def build_sequence_parallel(release):
    from opensora_dual.registry import family_for_model_type

    with open(os.path.join(release, "config.json")) as f:
        family = family_for_model_type(json.load(f)["model_type"])
    cls = family.model_class("ms")
    if "enable_sequence_parallelism" in inspect.signature(cls.__init__).parameters:
        model = cls.from_pretrained(release, enable_sequence_parallelism=True)
    else:
        model = cls.from_pretrained(release).set_sequence_parallel()
    model.set_train(False)
    return family.name, model


def main(argv):
    graph = "--graph" in argv
    argv = [a for a in argv if a != "--graph"]
    release, pairs = argv[0], list(zip(argv[1::2], argv[2::2]))
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    init()
    family, model = build_sequence_parallel(release)
    seen = []  # the token count each rank's first block really receives
    first = getattr(model, FIRST_BLOCK[family])[0]
    first.register_forward_hook(
        lambda cell, args, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[1]))
    forward = ms.jit(model.construct) if graph else None
    for inputs_path, out_prefix in pairs:
        inputs = {k: ms.Tensor(v) for k, v in np.load(inputs_path).items()}
        seen.clear()
        result = dict(out=model(**inputs).asnumpy(), sp_size=model.sp_size, tokens=np.array(seen))
        if graph:
            result["out_graph"] = forward(**inputs).asnumpy()
        np.savez(f"{out_prefix}.rank{get_rank()}.npz", **result)


if __name__ == "__main__":
    main(sys.argv[1:])
