"""Video writing: H.264 when ffmpeg is there (checked by OpenCV's decoder), a clear fallback when it is not,
codec choice, atomic writes."""

import numpy as np
import pytest

from i2v import video
from i2v.errors import InputError, OutputExistsError


def frames(t=6, h=32, w=48):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / 5), 128 + 100 * np.cos(yy / 7), 128 + 60 * np.sin((xx + yy) / 9)], -1)
    return np.stack([np.roll(base, i, axis=1) for i in range(t)]).astype(np.uint8)  # smooth: codecs keep it


def fourcc(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return code.to_bytes(4, "little").decode(errors="replace").lower(), n


@pytest.mark.parametrize("codec, suffix, expect", [(None, ".mp4", ("avc1", "h264")), (None, ".webm", ("vp90", "vp09")),
                                                   ("mp4v", ".mp4", ("mp4v", "fmp4"))])
def test_codecs(tmp_path, codec, suffix, expect):
    assert video.ffmpeg_executable() is not None  # imageio-ffmpeg is a dependency: H.264 must be available
    out = video.save(frames(), tmp_path / f"v{suffix}", fps=12, codec=codec)
    code, n = fourcc(out)
    assert code in expect and n in (6, 0)  # some containers do not store a frame count
    back, fps = video.load(out)
    assert back.shape == (6, 32, 48, 3) and fps == pytest.approx(12)
    assert np.abs(back.astype(int) - frames().astype(int)).mean() < 6  # lossy, but the same pictures


def test_fallback_without_ffmpeg_warns_and_writes_mp4v(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "ffmpeg_executable", lambda: None)
    with pytest.warns(UserWarning, match="no ffmpeg found"):
        out = video.save(frames(), tmp_path / "v.mp4", fps=8)
    assert fourcc(out)[0] in ("mp4v", "fmp4")  # MPEG-4 part 2; OpenCV may report FMP4


def test_writes_are_atomic_and_never_overwrite(tmp_path):
    out = video.save(frames(), tmp_path / "v.gif", fps=8)
    with pytest.raises(OutputExistsError):
        video.save(frames(), out)
    with pytest.raises(InputError, match="unknown codec 'xvid'; valid: h264"):
        video.save(frames(), tmp_path / "w.mp4", codec="xvid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif"]  # no temporary leftovers
