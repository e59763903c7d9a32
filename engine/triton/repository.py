"""Triton model repositories: model configs built as tritonclient's `ModelConfig` protobuf (so
every field name and enum is checked by protobuf, not by hand) and written as `config.pbtxt`
beside the model's version folder:

    REPO/NAME/config.pbtxt
    REPO/NAME/1/<model file>

Generic: names, shapes and parameters come from the caller (engine/ knows nothing of DBNet).
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..errors import DbrtError
from ..lazy import require

# numpy dtype name -> Triton data type
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
              "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32",
              "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING",
              "object": "TYPE_STRING"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class RepositoryError(DbrtError):
    """A model repository or config cannot be written or read."""


@dataclass(frozen=True)
class Tensor:
    """One input or output: name, numpy dtype name and dims WITHOUT the batch dimension when the
    model batches (-1: any size)."""

    name: str
    dtype: str
    dims: Tuple[int, ...]

    @classmethod
    def from_config(cls, entry) -> "Tensor":
        """From a ModelInput / ModelOutput of a ModelConfig."""
        type_name = config_pb2().DataType.Name(entry.data_type)
        dtype = next(k for k, v in DATA_TYPES.items() if v == type_name)
        return cls(entry.name, dtype, tuple(entry.dims))

    @property
    def data_type(self) -> str:
        try:
            return DATA_TYPES[self.dtype]
        except KeyError:
            raise RepositoryError(f"tensor {self.name!r}: no Triton type for {self.dtype}") from None


@dataclass(frozen=True)
class Scheduling:
    """How the server groups requests and how many copies of the model it runs.

    max_batch_size: largest batch the model takes (0: the model does not batch);
    preferred: batch sizes the dynamic batcher aims for; queue_delay_us: how long a request may
    wait for others; instances / kind: model copies and where they run (KIND_CPU / KIND_GPU).
    """

    max_batch_size: int = 8
    preferred: Tuple[int, ...] = ()
    queue_delay_us: int = 0
    instances: int = 1
    kind: str = "KIND_CPU"

    def __post_init__(self):
        if self.max_batch_size < 0 or self.instances < 1 or self.queue_delay_us < 0:
            raise RepositoryError(f"bad scheduling {self}")
        wrong = [p for p in self.preferred if not 1 <= p <= max(self.max_batch_size, 1)]
        if wrong:
            raise RepositoryError(f"preferred batch sizes {list(wrong)} are outside "
                                  f"1..{self.max_batch_size} (the max batch size)")


def config_pb2():
    """tritonclient's model_config_pb2 (the `triton` extra)."""
    return require("tritonclient.grpc.model_config_pb2")


def check_name(name: str) -> str:
    # '.' and '..' would name the repository itself or its parent, which write_model replaces
    if not _NAME.match(name or "") or set(name) == {"."}:
        raise RepositoryError(f"model name {name!r} must be letters, digits, '_', '.' or '-' "
                              "and not only dots")
    return name


def _tensors(field, tensors: Sequence[Tensor], pb) -> None:
    for tensor in tensors:
        entry = field.add(name=tensor.name, dims=list(tensor.dims))
        entry.data_type = pb.DataType.Value(tensor.data_type)


def _parameters(config, parameters: Mapping[str, str]) -> None:
    for key, value in parameters.items():
        config.parameters[key].string_value = str(value)


def model_config(name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 scheduling: Scheduling, backend: Optional[str] = None,
                 platform: Optional[str] = None, parameters: Mapping[str, str] = (),
                 cuda_graphs: bool = False, warmup: Optional[Mapping[str, Tuple[int, ...]]] = None,
                 default_model_filename: Optional[str] = None):
    """A ModelConfig for one model run by `backend` (e.g. "python") or `platform`
    (e.g. "tensorrt_plan"), with dynamic batching when it batches. `warmup`: input name -> dims
    (without batch) of one zero-filled request run at load time."""
    pb = config_pb2()
    config = pb.ModelConfig(name=check_name(name), max_batch_size=scheduling.max_batch_size)
    if backend:
        config.backend = backend
    if platform:
        config.platform = platform
    if default_model_filename:
        config.default_model_filename = default_model_filename
    _tensors(config.input, inputs, pb)
    _tensors(config.output, outputs, pb)
    if scheduling.max_batch_size > 0:
        config.dynamic_batching.preferred_batch_size.extend(scheduling.preferred)
        config.dynamic_batching.max_queue_delay_microseconds = scheduling.queue_delay_us
    config.instance_group.add(count=scheduling.instances,
                              kind=pb.ModelInstanceGroup.Kind.Value(scheduling.kind))
    if cuda_graphs:
        config.optimization.cuda.graphs = True
    if warmup:
        sample = config.model_warmup.add(name="zeros", batch_size=1 if scheduling.max_batch_size else 0)
        types = {t.name: t.data_type for t in inputs}
        for input_name, dims in warmup.items():
            entry = sample.inputs[input_name]
            entry.data_type = pb.DataType.Value(types[input_name])
            entry.dims.extend(dims)
            entry.zero_data = True
    _parameters(config, dict(parameters))
    return config


def ensemble_config(name: str, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                    steps: Sequence[Tuple[str, Mapping[str, str], Mapping[str, str]]],
                    max_batch_size: int, parameters: Mapping[str, str] = ()):
    """An ensemble: `steps` are (model, {model input: ensemble tensor}, {model output: ensemble
    tensor}); tensors not among the ensemble's inputs / outputs pass between steps."""
    pb = config_pb2()
    config = pb.ModelConfig(name=check_name(name), platform="ensemble", max_batch_size=max_batch_size)
    _tensors(config.input, inputs, pb)
    _tensors(config.output, outputs, pb)
    for model, input_map, output_map in steps:
        config.ensemble_scheduling.step.add(model_name=model, model_version=-1,
                                            input_map=dict(input_map), output_map=dict(output_map))
    _parameters(config, dict(parameters))
    return config


def config_text(config) -> str:
    """The config.pbtxt text of a ModelConfig."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def read_config(path: Union[str, Path]):
    """The ModelConfig of a config.pbtxt (RepositoryError naming the file when it is not one)."""
    from google.protobuf import text_format

    path = Path(path)
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), config_pb2().ModelConfig())
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except text_format.ParseError as exc:
        raise RepositoryError(f"{path} is not a Triton model config: {exc}") from exc


# in a model folder while it is written: a folder an interrupted export left without its
# config.pbtxt is still dbrt's own, replaced by the next export instead of refused
PARTIAL = ".dbrt-partial"


def replaceable_model_folder(folder: Path) -> bool:
    """A model folder dbrt may replace: it has a config.pbtxt, or an export of it was interrupted."""
    return not folder.is_symlink() and ((folder / "config.pbtxt").is_file()
                                        or (folder / PARTIAL).is_file())


def write_model(repository: Union[str, Path], config, files: Mapping[str, Union[Path, bytes, str]] = (),
                version: int = 1, fill: Optional[Callable[[Path], None]] = None) -> Path:
    """REPO/NAME/config.pbtxt and REPO/NAME/VERSION/<files> (file name -> source path, bytes or
    text; `fill(version folder)` adds more); an existing model folder of that name (one with a
    config.pbtxt, or one an interrupted export left) is replaced, any other folder or file there
    is refused. The config is written last, so a server never sees half a model. Returns the
    model folder."""
    folder = Path(repository) / check_name(config.name)
    if folder.exists() or folder.is_symlink():
        if not replaceable_model_folder(folder):
            raise RepositoryError(f"{folder} exists and is not a Triton model folder (no "
                                  "config.pbtxt): not replaced; choose another --name or -o")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / PARTIAL).write_text("dbrt is writing this model; removed once it is complete\n")
    (folder / str(version)).mkdir()
    files: Dict[str, Union[Path, bytes, str]] = dict(files)
    for name, source in files.items():
        target = folder / str(version) / name
        if isinstance(source, bytes):
            target.write_bytes(source)
        elif isinstance(source, str):
            target.write_text(source, encoding="utf-8")
        else:
            shutil.copyfile(source, target)
    if fill is not None:
        fill(folder / str(version))
    (folder / "config.pbtxt").write_text(config_text(config), encoding="utf-8")
    (folder / PARTIAL).unlink()
    return folder
