"""What the script tests share: reading written frames, a free TCP port and the msrun command line for a
two-process job on this CPU (the venv's python first on PATH, as msrun needs)."""
import os
import socket
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_frames(path):
    """uint8 [T, H, W, 3] of a written sample (.png: one frame; video files through PyAV)."""
    import numpy as np

    if str(path).endswith(".png"):
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))[None]
    from opensora_dual.inference import read_video

    return read_video(path)[0]


def msrun_env(env=None) -> dict:
    env = dict(os.environ if env is None else env)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def msrun_cmd(ranks, log_dir, script, *args) -> list:
    return ["msrun", f"--worker_num={ranks}", f"--local_worker_num={ranks}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", f"--log_dir={log_dir}", "--join=True", "--cluster_time_out=120",
            str(script), *[str(a) for a in args]]
