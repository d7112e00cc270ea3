"""i2v.runtime: dtype names from one table, device checks, the default thread count."""

import pytest

from i2v import runtime
from i2v.errors import ConfigError


@pytest.mark.parametrize("cores, load, expected", [(2, 0.1, 2), (2, 2.3, 1), (16, 4.0, 8), (16, 10.0, 6), (1, 0.0, 1)])
def test_default_threads_leave_busy_cores_alone(monkeypatch, cores, load, expected):
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (load, load, load))
    assert runtime.default_threads() == expected


def test_dtype_names_and_errors():
    import torch

    assert runtime.dtype("bf16") is torch.bfloat16 and runtime.dtype("fp8") is torch.float8_e4m3fn
    assert runtime.dtype(torch.float16) is torch.float16 and runtime.dtype(None) is None
    with pytest.raises(ConfigError, match="valid: float32"):
        runtime.dtype("float7")
    with pytest.raises(ConfigError, match="--device banana"):
        runtime.device("banana")
    with pytest.raises(ConfigError, match="--threads"):
        runtime.set_threads(0)
