"""The ``landscape`` command: ``info``, ``spectrum``, ``scan``, ``render``, ``eos``, ``flow``, ``lyapunov``,
``connect``, ``hopfield``, ``ntk``, ``infoplane`` and ``demo``, one module each (its options beside its
``run``), in the order of ``COMMANDS``; what they share is in ``landscape.cli.common``.

Bad input (an unknown problem, a missing file, a checkpoint that does not fit), and an exception raised
by the user's code (model, loss, metric, problem file), is reported in one line on stderr that names what
failed, with exit code 2; ``LANDSCAPE_TRACEBACK=1`` shows the whole traceback instead. A warning, from the
toolkit, torch or the user's code, is one line too: its first line, its kind and the file and line that
raised it.

``scan`` and ``spectrum`` also run under ``torchrun`` (``torchrun --nproc_per_node N -m landscape
scan ...``), found from the environment it sets (WORLD_SIZE > 1): ``spectrum`` on the data-parallel
objective, ``scan`` on a grid split over the processes (``landscape.core.distributed``). Rank 0 prints
and writes the JSON and figures; the other ranks print only their errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import torch

from landscape.cli import (connect, demo, eos, flow, hopfield, info, infoplane, lyapunov, ntk, render, scan,
                           spectrum)
from landscape.cli.common import DISTRIBUTED, glue_grids, in_world, torchrun_world
from landscape.core import distributed

COMMANDS = (info, spectrum, scan, render, eos, flow, lyapunov, connect, hopfield, ntk, infoplane, demo)


def parser() -> argparse.ArgumentParser:
    """The parser of every command; each parsed command runs as ``args.run(args)`` (in one process)."""
    top = argparse.ArgumentParser(
        prog="landscape",
        description="Look inside a trained network's loss: exact Hessian-vector products, "
                    "curvature and the geometry of the landscape.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    for name in DISTRIBUTED:  # one process, so that args.run(args) works; main() gives torchrun's world
        sub.choices[name].set_defaults(world=distributed.World())  # (not on the top parser: infoplane saves args)
    return top


def one_line_warnings(prefix: str):
    """A ``warnings.showwarning`` that prints each warning once, in one line: ``prefix: warning: <its first
    line> (<its kind>, <file>:<line>)``."""
    said = set()

    def show(message, category, filename, lineno, *_):
        text = (f"{prefix}: warning: {(str(message).strip().splitlines() or [''])[0]} "
                f"({category.__name__}, {Path(filename).name}:{lineno})")
        if text not in said:
            said.add(text)
            print(text, file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(glue_grids(sys.argv[1:] if argv is None else list(argv)))
    world, who, ok = distributed.World(), "", False
    try:
        world = torchrun_world(args)
        if args.command in DISTRIBUTED:
            args = in_world(args, world)
        who = "" if world.main else f" (rank {world.rank} of {world.size})"
        with distributed.quiet(world), warnings.catch_warnings():
            warnings.showwarning = one_line_warnings(f"landscape {args.command}{who}")
            code = args.run(args)
        ok = True
        return code
    except (ValueError, OSError) as error:  # OSError: a file or folder that cannot be read or made
        if os.environ.get("LANDSCAPE_TRACEBACK"):
            raise
        print(f"landscape {args.command}{who}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landscape {args.command}{who}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:  # torch refusing the model on its data: shapes, dtypes, devices
        if os.environ.get("LANDSCAPE_TRACEBACK"):
            raise
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        what = ("the processes lost each other (did another rank fail?)" if isinstance(error, torch.distributed.DistError)
                else "the model failed on its data")
        print(f"landscape {args.command}{who}: error: {what}: {first}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown(synchronize=ok)
