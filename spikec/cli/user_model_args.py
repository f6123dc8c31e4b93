"""The ``--model`` flags that let ``convert``, ``eval`` and ``compress`` take a user's own ANN.

Only wiring: :mod:`spikec.user_model` does the loading and checking.
"""
from __future__ import annotations

from spikec.errors import SpikecError, UsageError


def add_arguments(group) -> None:
    """``--model``, ``--weights``, ``--model-args``, ``--num-classes``, ``--input-shape``."""
    group.add_argument("--model", default=None, metavar="SPEC",
                       help="your own ANN instead of a checkpoint: path/to/file.py:ClassName (imports and runs that "
                            "file), torchvision:NAME (e.g. torchvision:resnet18), or a torch.export program file.pt2")
    group.add_argument("--weights", default=None, metavar="STATE_DICT",
                       help="state_dict file for --model file.py:Class or torchvision:NAME (read with weights_only=True)")
    group.add_argument("--model-args", default=None, metavar="K=V,...",
                       help="constructor arguments of --model as Python literals, e.g. width=0.5,depth=3")
    group.add_argument("--num-classes", type=int, default=None, metavar="N",
                       help="classes of --model (default: the dataset's; passed as num_classes= where accepted)")
    group.add_argument("--input-shape", dest="model_input_shape", default=None, metavar="C,H,W",
                       help="one sample's shape for --model (default: the dataset's, or the .pt2 program's)")


def wants_user_model(args, checkpoint_arg: str | None) -> bool:
    """True with ``--model``; a usage error when both or neither of a checkpoint and ``--model`` are given."""
    given = getattr(args, "model", None)
    if given and checkpoint_arg:
        raise UsageError(f"give either a checkpoint ({checkpoint_arg}) or --model {given}, not both")
    if not given and not checkpoint_arg:
        raise UsageError("give a checkpoint file or --model path/to/file.py:ClassName | torchvision:NAME | file.pt2")
    if not given:
        for flag, value in (("--weights", args.weights), ("--model-args", args.model_args),
                            ("--num-classes", args.num_classes), ("--input-shape", args.model_input_shape)):
            if value is not None:
                raise UsageError(f"{flag} applies only with --model")
    return bool(given)


def load(args, info):
    """``(module, ann checkpoint)`` of ``--model`` for the dataset ``info`` (its shape and classes are the defaults)."""
    from spikec.user_model import ModelSpec, load_user_model, parse_model_args, parse_shape

    if args.num_classes is not None and args.num_classes < 1:
        raise UsageError(f"--num-classes must be >= 1, got {args.num_classes}")
    shape = parse_shape(args.model_input_shape) if args.model_input_shape else None
    spec = ModelSpec(args.model, args.weights, parse_model_args(args.model_args),
                     args.num_classes if args.num_classes is not None else info.num_classes,
                     shape)
    if shape is None and spec.kind != "program":
        spec = ModelSpec(spec.model, spec.weights, spec.model_args, spec.num_classes, tuple(info.input_shape))
    user = load_user_model(spec)
    if tuple(user.input_shape) != tuple(info.input_shape):
        raise SpikecError(f"--model {args.model} takes inputs of shape {tuple(user.input_shape)}, dataset {info.name} "
                          f"has {tuple(info.input_shape)}")
    classes = user.checkpoint["arch_config"]["num_classes"]
    if classes < info.num_classes:
        raise SpikecError(f"--model {args.model} has {classes} outputs, dataset {info.name} has {info.num_classes} classes")
    ckpt = dict(user.checkpoint, dataset=info.to_dict())
    print(f"loaded --model {args.model}: {type(user.module).__name__}, input {tuple(user.input_shape)}, "
          f"{classes} classes")
    return user.module, ckpt
