import io

import av
import numpy as np
import pytest

from echoseg.video import VideoError, read_video, write_avi


def _gradient_clip(num_frames=12, height=48, width=64) -> np.ndarray:
    x = np.linspace(0, 255, width)[None, None, :] * np.ones((num_frames, height, 1))
    frames = x.astype(np.uint8)
    for t in range(num_frames):
        frames[t, 10:20, 5 + 2 * t : 15 + 2 * t] = 255
    return frames


def test_avi_roundtrip_from_path_bytes_and_file_object(tmp_path):
    frames = _gradient_clip()
    path = write_avi(tmp_path / "clip.avi", frames, fps=30.0)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert fps == pytest.approx(30.0)
    assert np.abs(decoded.astype(int) - frames).mean() < 2.0
    from_bytes, _ = read_video(path.read_bytes())
    with open(path, "rb") as fh:
        from_file, _ = read_video(fh)
    np.testing.assert_array_equal(from_bytes, decoded)
    np.testing.assert_array_equal(from_file, decoded)


def test_reads_mp4(tmp_path):
    frames = _gradient_clip(num_frames=8, height=48, width=48)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 48, "yuv420p"
        stream.codec_context.qmin = stream.codec_context.qmax = 2
        for image in frames:
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(image, format="gray").reformat(format="yuv420p"))
            )
        container.mux(stream.encode())
    decoded, fps = read_video(io.BytesIO(path.read_bytes()))
    assert decoded.shape == frames.shape
    assert fps == pytest.approx(25.0)
    assert np.abs(decoded.astype(int) - frames).mean() < 6.0


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken_clip.avi"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 50)
    with pytest.raises(VideoError, match=r"broken_clip\.avi"):
        read_video(bad)
    with pytest.raises(VideoError, match="bytes"):
        read_video(b"not a video at all" * 10)
    with pytest.raises(VideoError, match=r"missing\.avi"):
        read_video(tmp_path / "missing.avi")
    assert issubclass(VideoError, ValueError)


def test_write_avi_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_avi(tmp_path / "x.avi", np.zeros((2, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="without frames"):
        write_avi(tmp_path / "x.avi", np.zeros((0, 8, 8), dtype=np.uint8))
