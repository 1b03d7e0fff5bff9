"""Run ``python -m asr.bin.train`` and SIGKILL it at a chosen write (used by test_resume_kill.py).

Usage: python kill_driver.py MODE FILE NTH -- <asr.bin.train options>

MODE ``during``: the NTH ``torch.save`` to a file named FILE writes half of its bytes and then the
process kills itself (SIGKILL: no handler, no cleanup), as the OOM killer or a preemption would
in the middle of a write. MODE ``before``: it is killed as the NTH save to FILE begins (between
two of the trainer's writes). MODE ``none``: no kill.

``torch.save`` is replaced before nar-speech is imported, so the trainer's atomic saves
(nar.base.resume.atomic_torch_saves) wrap this killing writer as they wrap the real one.
"""

import io
import os
import signal
import sys
from pathlib import Path

import torch

mode, name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert sys.argv[4] == "--"
real_save = torch.save
seen = {"n": 0}


def killing_save(obj, f, *args, **kwargs):
    target = Path(f) if isinstance(f, (str, os.PathLike)) else None
    # the atomic wrapper writes to ".<name>.tmp": match the final name it stands for
    matches = target is not None and target.name in (name, f".{name}.tmp")
    if matches:
        seen["n"] += 1
    if matches and seen["n"] == nth and mode == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    if matches and seen["n"] == nth and mode == "during":
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            os.fsync(out.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)


torch.save = killing_save
from asr.bin.train import main  # noqa: E402  (after the patch, as documented)

main(sys.argv[5:])
