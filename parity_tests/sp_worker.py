"""One rank of the sequence-parallel parity test (launched by ``msrun`` from test_sequence_parallel.py).

    python parity_tests/sp_worker.py RELEASE_FOLDER INPUTS.npz OUT_PREFIX

Builds the MindSpore STDiT3 from the release folder with ``enable_sequence_parallelism=True`` (the spatial
tokens split over the job's ranks), runs the inputs, and writes OUT_PREFIX.rank<N>.npz (output, sp_size, tokens seen by the first spatial block).
"""
import os
import sys

import numpy as np
import mindspore as ms
from mindspore.communication import get_rank, init

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(release, inputs_path, out_prefix):
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    init()
    from ms_impl.models.stdit.stdit3 import STDiT3

    model = STDiT3.from_pretrained(release, enable_sequence_parallelism=True)
    model.set_train(False)
    seen = []  # the token count each rank's first spatial block really receives
    model.spatial_blocks[0].register_forward_hook(lambda cell, args, out: seen.append(out.shape[1]))
    inputs = dict(np.load(inputs_path))
    out = model(**{k: ms.Tensor(v) for k, v in inputs.items()}).asnumpy()
    np.savez(f"{out_prefix}.rank{get_rank()}.npz", out=out, sp_size=model.sp_size, tokens=np.array(seen))


if __name__ == "__main__":
    main(*sys.argv[1:4])
