"""ESPnet's GAN codec training (``espnet2.bin.gan_codec_train``) with one compatibility fix.

Usage: exactly the options of ``python -m espnet2.bin.gan_codec_train`` (recipes/codec.sh stage 7).

The fix: ESPnet 202511's chunk iterator draws the chunk length with
``int(state.choice(chunk_lengths, 1))``, which numpy >= 2.4 rejects ("only 0-dimensional arrays
can be converted to Python scalars"); codec training needs that iterator (fixed-length chunks,
a multiple of the hop). The iterator's random state is given a ``choice`` that returns a
0-d array when one element is drawn, which is what that line expected. Nothing else changes.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from nar.base.resume import ResumableTaskMixin


class _RandomState(np.random.RandomState):
    def choice(self, a, size=None, replace=True, p=None):
        out = super().choice(a, size, replace, p)
        if size == 1:
            return np.asarray(out).reshape(())
        return out


def patch_chunk_iterator() -> None:
    import espnet2.iterators.chunk_iter_factory as cif

    if getattr(cif, "_nar_speech_patched", False):
        return
    np_proxy = types.ModuleType("numpy_for_chunk_iter")
    np_proxy.__dict__.update(np.__dict__)
    np_proxy.random = types.ModuleType("numpy_random_for_chunk_iter")
    np_proxy.random.__dict__.update(np.random.__dict__)
    np_proxy.random.RandomState = _RandomState
    cif.np = np_proxy
    cif._nar_speech_patched = True


def __getattr__(name: str):
    """``ResumableGANCodecTask``: ESPnet's GAN codec task; a killed training resumes exactly, one
    writer per experiment directory (:class:`nar.base.resume.ResumableTaskMixin`). Built on first
    use (PEP 562), so importing this module does not import ESPnet; a multi-GPU worker unpickles
    it by this name."""
    if name != "ResumableGANCodecTask":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from espnet2.tasks.gan_codec import GANCodecTask

    task = type(name, (ResumableTaskMixin, GANCodecTask), {"__module__": __name__, "__qualname__": name,
                                                           "__doc__": __getattr__.__doc__})
    globals()[name] = task
    return task


def main(argv=None) -> None:
    patch_chunk_iterator()
    __getattr__("ResumableGANCodecTask").main(cmd=argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
