"""`distinit export CKPT OUT.safetensors`: a run's weights as safetensors, which loads without
unpickling anything (a file anyone can pass as `model.weights` without trusting its author).

A pretraining checkpoint exports its backbone (what `model.init=checkpoint` loads); a fine-tuned
one its whole classifier. The run's resolved config and the job that wrote it go into the
header's metadata as JSON, so the normalisation a student expects and `eval`'s checks survive;
so do a fine-tuned run's class names ("classes", in label order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from distinit.arguments import Parser
from distinit.engine.checkpoint import (
    backbone_state,
    load_checkpoint,
    model_state,
    write_failure,
)
from distinit.errors import UserError


def export(ckpt_path: str | Path, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise UserError(f"{out_path}: the exported file must end in .safetensors")
    ckpt = load_checkpoint(ckpt_path)
    job = ckpt.get("job")
    state = model_state(ckpt) if job in ("finetune", "train-image") else backbone_state(ckpt)
    if not state:
        raise UserError(f"{ckpt_path} holds no weights to export")
    # A fine-tuned run's label map ("classes") too: `eval` checks it against the test split's.
    metadata = {k: json.dumps(ckpt[k]) for k in ("config", "job", "classes")
                if ckpt.get(k) is not None}
    from safetensors.torch import save_file

    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # safetensors refuses tensors that share memory or are not contiguous.
        save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp), metadata)
        os.replace(tmp, out_path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {out_path}: {write_failure(e, out_path.parent)}") from None
    print(f"wrote {len(state)} tensors ({job or 'weights'}) to {out_path}")
    return out_path


def main(argv: list[str]) -> int:
    parser = Parser(prog="distinit export")
    parser.add_argument("checkpoint", help="a run's last.pt (or any checkpoint distinit reads)")
    parser.add_argument("out", help="the .safetensors file to write")
    ns = parser.parse_args(argv)
    export(ns.checkpoint, ns.out)
    return 0
