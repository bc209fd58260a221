"""Where and how a model runs (:class:`LoadConfig`): device or device map, dtype, attention kernel, each checked
before any model work.

No torch at import: the CLI parser reads :class:`LoadConfig`'s fields for ``--device``, ``--dtype``,
``--device-map``, ``--n-devices`` and ``--attention`` (``lens-steer --help`` imports no torch); the checks that ask
torch about this machine's devices import it when they run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens_steer.errors import LensSteerError
from lens_steer.options import option, positive_int

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16")
"""The compute dtypes by name (``--dtype``'s choices); :data:`_DTYPE_ALIASES` also names them."""
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "float32"}
ATTENTIONS = ("eager", "sdpa")
_NAMED_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The compute dtype named by ``dtype``: float32 (the default, and the only sensible one on CPU), bfloat16 or
    float16 (refused for Gemma by :func:`load_model`, whose activations overflow in fp16).

    >>> resolve_dtype("bf16"), resolve_dtype(None)
    (torch.bfloat16, torch.float32)
    """
    import torch  # deferred: see the module docstring

    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, "float32" if dtype is None else _dtype_text(dtype))


def _dtype_text(dtype: str | torch.dtype) -> str:
    """``dtype`` by its name (``bf16`` -> ``bfloat16``; a torch dtype by its own name), without importing torch."""
    if not isinstance(dtype, str):
        return dtype_name(dtype)
    name = _DTYPE_ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise LensSteerError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return name


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``: how manifests and summaries write a dtype."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class LoadConfig:
    """Where and how a model runs: one device, or one model split over several (``device_map``, ``n_devices``),
    its dtype and its attention kernel. Every command that loads a model takes these options; nothing here changes
    which neurons exist or what they mean.

    Attributes:
        device: torch device (default ``cpu``); not with ``device_map`` / ``n_devices``.
        dtype: float32, bfloat16 or float16 (never for Gemma). None: float32 for a new run; the recorded dtype for a
            run that already has statistics (:meth:`lens_steer.run.Run.model`).
        device_map: HF/accelerate placement of one model over several devices: ``auto``, ``balanced``,
            ``balanced_low_0``, ``sequential``, a dict, or a JSON file holding one (module name -> device).
        n_devices: split the model evenly over this many CUDA GPUs (the bridge's own ``n_devices``).
        attention: ``eager`` (TransformerLens's default: attention patterns are hookable) or ``sdpa`` (PyTorch's
            fused kernel; lens_steer never reads attention patterns, so it only changes speed and memory).

    >>> LoadConfig(dtype="bf16").dtype, LoadConfig(device_map="auto").device
    ('bfloat16', None)
    >>> LoadConfig(device="cuda", device_map="auto")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: --device-map places the model itself; drop --device (or drop --device-map)
    """

    device: str | None = option(None, help="torch device: cpu (default), cuda, cuda:1, mps")
    dtype: str | torch.dtype | None = option(  # normalised to its name (bfloat16) when built
        None, choices=DTYPES, help="compute dtype (default: float32 for identify, the recorded dtype otherwise);"
        " float16 is refused for Gemma (its activations overflow)")
    device_map: str | dict[str, Any] | None = option(
        None, metavar="auto|balanced|FILE.json", help="split one model over several devices (the bridge's"
        " device_map): auto, balanced, balanced_low_0, sequential, or a JSON file of module name -> device; not with"
        " --device")
    n_devices: int | None = option(None, type=positive_int, help="split the model evenly over this many CUDA GPUs;"
                                   " not with --device")
    attention: str = option("eager", choices=ATTENTIONS, help="attention kernel: eager (TransformerLens default,"
                            " hookable patterns) or sdpa (fused; faster and leaner on long inputs; lens_steer never"
                            " reads attention patterns)")

    def __post_init__(self) -> None:
        if self.dtype is not None:
            object.__setattr__(self, "dtype", _dtype_text(self.dtype))
        if self.attention not in ATTENTIONS:
            raise LensSteerError(f"unknown attention {self.attention!r}; use {' or '.join(ATTENTIONS)}")
        if self.device_map is not None and self.n_devices is not None:
            raise LensSteerError("--device-map and --n-devices both place the model; give one of them")
        if self.n_devices is not None:
            _check_n_devices(self.n_devices)
        placed = self.device_map is not None or self.n_devices is not None
        if placed and self.device is not None:
            flag = "--device-map" if self.device_map is not None else "--n-devices"
            raise LensSteerError(f"{flag} places the model itself; drop --device (or drop {flag})")
        if isinstance(self.device_map, str) and self.device_map not in _NAMED_MAPS:
            object.__setattr__(self, "device_map", _read_device_map(self.device_map))
        if not placed and self.device is None:
            object.__setattr__(self, "device", "cpu")
        if self.device is not None:
            object.__setattr__(self, "device", check_device(self.device))
        if placed:
            from lens_steer.distributed import current  # deferred: torch; see the module docstring

            if current().collective:
                raise LensSteerError("under torchrun every rank holds one model replica on its own device; --device-map"
                                     " and --n-devices split one model over devices: use one or the other")

    @classmethod
    def of(cls, load: LoadConfig | str | None = None, **fields: Any) -> LoadConfig:
        """The one place a load setting becomes a :class:`LoadConfig`: a LoadConfig as it is, a device string
        (``"cuda"``), or None (the defaults: cpu, float32, eager); ``fields`` (LoadConfig's, by name) replace its.

        >>> LoadConfig.of("cpu") == LoadConfig(device="cpu"), LoadConfig.of(None, attention="sdpa").attention
        (True, 'sdpa')
        """
        if isinstance(load, str):
            return cls(device=load, **fields)
        if load is None:
            return cls(**fields)
        if not isinstance(load, cls):
            raise TypeError(f"load must be a LoadConfig, a device string or None, not {type(load).__name__}")
        return dataclasses.replace(load, **fields) if fields else load

    def placement(self) -> dict[str, Any]:
        """What manifests and summaries record about where the model ran (never part of a resume key)."""
        return {"device": self.device, "device_map": self.device_map, "n_devices": self.n_devices,
                "attention": self.attention}


_DEVICE = re.compile(r"(cpu|mps|cuda)(?::(\d+))?")


def check_device(device: str | torch.device) -> str:
    """``device`` as a string if this machine has it: cpu, cuda, cuda:N or mps; anything else is one line, before
    any model work (torch's own error comes mid-load, as a traceback).

    >>> import torch
    >>> check_device("cpu"), check_device(torch.device("cpu"))
    ('cpu', 'cpu')
    >>> check_device("tpu")
    Traceback (most recent call last):
    ...
    lens_steer.errors.LensSteerError: unknown device 'tpu'; use cpu, cuda, cuda:N (N a GPU index) or mps
    """
    import torch  # deferred: see the module docstring

    text = str(device).strip()
    m = _DEVICE.fullmatch(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise LensSteerError(f"unknown device {text!r}; use cpu, cuda, cuda:N (N a GPU index) or mps")
    kind = m.group(1)
    if kind == "cuda":
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have == 0:
            raise LensSteerError(f"--device {text}: no CUDA device here; use --device cpu")
        if m.group(2) is not None and int(m.group(2)) >= have:
            raise LensSteerError(f"--device {text}: this machine has {have} CUDA device(s), cuda:0..cuda:{have - 1};"
                                 " use one of them or --device cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LensSteerError(f"--device {text}: no MPS (Apple GPU) device here; use --device cpu")
    return text


def _check_n_devices(n: int) -> None:
    import torch  # deferred: see the module docstring

    if n < 1:
        raise LensSteerError(f"--n-devices must be >= 1, not {n}")
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have == 0:
        raise LensSteerError("--n-devices splits a model over CUDA GPUs and this machine has none; use --device cpu,"
                             " or --device-map FILE.json to place the layers yourself")
    if n > have:
        raise LensSteerError(f"--n-devices {n} needs {n} CUDA GPUs and this machine has {have}")


def _read_device_map(text: str) -> dict[str, Any]:
    """A device map JSON file (module name -> device): ``{"": "cpu"}``, ``{"model.layers.0": 0, ...}``."""
    path = Path(text)
    if not path.is_file():
        raise LensSteerError(f"--device-map {text!r} is neither {', '.join(_NAMED_MAPS)} nor a JSON file; write"
                             ' the map as JSON, e.g. {"": "cuda:0"} or {"model.layers.0": 0, "model.layers.1": 1, ...}')
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LensSteerError(f"--device-map {text}: not valid JSON ({exc}); write a JSON object of module name ->"
                             " device") from None
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool) for k, v in value.items()):
        raise LensSteerError(f"--device-map {text}: expected a non-empty JSON object of module name -> device"
                             ' (a string like "cpu"/"cuda:1" or a GPU index), e.g. {"": "cpu"}')
    return value
