"""asr.data.formant.warp_formants: formants move by the factor, pitch and timing stay.

Truth: a synthetic vowel (a 110 Hz pulse train through two resonators at 700 and 1800 Hz), its
formants read back by LPC (librosa.lpc, an estimator independent of the cepstral envelope the
warp uses) and its f0 by YIN.
"""

import numpy as np
import pytest
import scipy.signal as ss

from asr.data.formant import warp_formants

SR = 16000


def _vowel(f0=110.0, formants=((700.0, 80.0), (1800.0, 120.0)), seconds=1.0):
    x = np.zeros(int(SR * seconds))
    x[::int(round(SR / f0))] = 1.0
    for freq, bw in formants:
        r, th = np.exp(-np.pi * bw / SR), 2 * np.pi * freq / SR
        x = ss.lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _lpc_formants(y, order=4):
    import librosa

    seg = y[2000:-2000].astype(np.float64) * np.hanning(y.size - 4000)
    roots = [r for r in np.roots(librosa.lpc(seg, order=order)) if r.imag > 0]
    return sorted(np.angle(roots) * SR / (2 * np.pi))


def _f0(y):
    import librosa

    return float(np.median(librosa.yin(y, fmin=60, fmax=400, sr=SR)))


@pytest.mark.parametrize("alpha", [0.85, 1.15])
def test_formants_scale_by_alpha_pitch_and_length_stay(alpha):
    x = _vowel()
    f1, f2 = _lpc_formants(x)
    assert abs(f1 - 700) < 25 and abs(f2 - 1800) < 25  # the estimator reads the input right
    y = warp_formants(x, alpha)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.abs(y).max() == pytest.approx(np.abs(x).max(), rel=1e-5)  # peak level kept
    g1, g2 = _lpc_formants(y)
    assert g2 == pytest.approx(alpha * 1800, rel=0.03)
    # F1 sits among few harmonics, so the smooth envelope moves it less exactly: direction and size
    assert (g1 - 700) * (alpha - 1) > 0 and abs(g1 / 700 - 1) > 0.04
    assert _f0(y) == pytest.approx(_f0(x), rel=0.01) == pytest.approx(110, rel=0.01)


def test_alpha_one_is_identity_and_short_signals_work():
    x = _vowel()
    np.testing.assert_array_equal(warp_formants(x, 1.0), x)
    short = _vowel(seconds=0.02)  # shorter than one STFT frame
    assert warp_formants(short, 0.9).shape == short.shape


def test_bad_inputs():
    x = _vowel()
    with pytest.raises(ValueError, match="1-D"):
        warp_formants(np.stack([x, x]), 0.9)
    with pytest.raises(ValueError, match="NaN"):
        warp_formants(np.array([0.1, np.nan, 0.2]), 0.9)
    with pytest.raises(ValueError, match="outside"):
        warp_formants(x, 3.0)
    with pytest.raises(ValueError, match="lifter"):
        warp_formants(x, 0.9, n_fft=64, lifter=40)


def test_espnet_effect_draws_alpha_in_range_and_is_registered():
    import torch
    from espnet2.layers import augmentation

    from asr.data.formant import formant_warp_effect
    from asr.task import register_augmentations

    register_augmentations()  # the task calls it where it builds the preprocessor; idempotent
    register_augmentations()
    assert augmentation.effects_dict["formant_warp"] is formant_warp_effect
    x = torch.from_numpy(_vowel(seconds=0.3))
    fixed = formant_warp_effect(x, SR, alpha=0.9)
    assert isinstance(fixed, torch.Tensor) and fixed.dtype == x.dtype and fixed.shape == x.shape
    np.testing.assert_allclose(fixed.numpy(), warp_formants(x.numpy(), 0.9, iterations=12))
    np.random.seed(0)
    drawn = formant_warp_effect(x, SR, min_alpha=0.95, max_alpha=0.95)  # a range of one value
    np.testing.assert_allclose(drawn.numpy(), warp_formants(x.numpy(), 0.95, iterations=12))
    with pytest.raises(ValueError, match="min_alpha"):
        formant_warp_effect(x, SR, min_alpha=1.2, max_alpha=0.9)
