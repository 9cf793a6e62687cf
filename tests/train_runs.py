"""Shared by the training tests: small runs of the tiny model on the synthetic set, and comparing their states.
Importing it stays torch-free (``test_config`` uses the old-layout config)."""
from __future__ import annotations

import json

SMALL = {"model": "tiny", "steps": 2, "data.source_size": "160x96", "data.target_size": "128x64",
         "data.num_workers": 0, "log_every": 1, "tensorboard": False}
SMALL_SET = [f"{k}={v}" for k, v in SMALL.items() if k not in ("model", "steps")]

# The config.json of a run made at commit 1af3e94 (before the ``speed`` section and the recorded roots, init and
# sync_bn): ``ftadapt train clan-norm --model tiny --steps 2`` with small sizes, stopped after step 1.
OLD_LAYOUT_CONFIG = json.loads(
    '{"method":"clan-norm","model":"tiny","preset":"paper","steps":2,"seed":1234,"device":"auto","amp":"off",'
    '"channels_last":false,"cudnn_benchmark":true,"compile":"off","cuda_graphs":false,"channel_multiple":0,'
    '"space_to_batch":false,"checkpoint_every":2000,"keep_checkpoints":0,"log_every":1,"eval_every":0,'
    '"check_data":true,"tensorboard":false,"stop_at":1,"data":{"source_size":[160,96],"target_size":[128,64],'
    '"augment":true,"batch_size":1,"num_workers":0},"optim":{"lr":0.00025,"momentum":0.9,"weight_decay":0.0005,'
    '"power":0.9,"warmup_steps":0,"d_lr":5e-05,"d_betas":[0.9,0.99],"d_weight_decay":0.0005},"loss":{"seg":"ce",'
    '"focal_gamma":2.0,"aux_weight":0.1,"lambda_norm":0.00015,"delta_r":0.12,"norm_damping":0.0,"lambda_adv":0.001,'
    '"lambda_weight":0.01,"lambda_local":40.0,"epsilon":0.4,"adv_damping":false,"adv_preheat_steps":0,'
    '"lambda_target":0.1,"iw_ratio":0.0,"self_guidance":false,"guidance_threshold":0.95},"eval":{"split":"val",'
    '"size":[1024,512],"flip":false}}')
OLD_LAYOUT_HASH = "874eaa3514d70a9d"  # config_hash of it at that commit (its checkpoints' meta.json record it)


def roots(synthetic) -> dict[str, str]:
    """The config keys of the synthetic source and target roots."""
    return {"data.source": f"gta5:{synthetic.gta5_root}", "data.target": f"cityscapes:{synthetic.cityscapes_root}"}


def run(synthetic, out, method="clan-norm", resume=False, **overrides):
    """Train in-process; a resume repeats only ``overrides`` (the run's saved config supplies the rest, the dataset
    roots included)."""
    from ftadapt.training import resolve_config, train

    fresh = {} if resume else {**SMALL, **roots(synthetic)}
    cfg = resolve_config({"method": method, **fresh, **overrides}, out=out, resume=resume)
    return train(cfg, out=out, resume=resume, progress=False)


def state(run_dir):
    """The weights and train_state of a run's last checkpoint."""
    from ftadapt.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir / "checkpoints" / "last", with_train_state=True)
    return ckpt.state_dict, ckpt.train_state


def assert_same(a, b, where="state"):
    """Bit-for-bit equality of nested tensors, dicts, lists and plain values."""
    import torch

    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
