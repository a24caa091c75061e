"""Fig. 7 at proxy scale: where each scaled model looks (class activation maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plan import Run


def grad_cam(model, x, labels, stride: int):
    """Gradient-weighted class activation maps (Selvaraju et al. 2017) at the stage of `stride`.

    The paper's Fig. 7 uses CAM (Zhou et al. 2016) on the last feature map;
    at proxy resolutions that map is 1-2 pixels wide, so the maps here come
    from the last stage at `stride`, weighted by the gradient of the true
    class's logit. Returns maps in [0, 1] at input size, and the predictions.
    """
    import torch
    import torch.nn.functional as F

    stages = [f for f in model.feature_info if f["reduction"] <= stride]
    stage = stages[-1]["stage"]
    acts: dict[str, torch.Tensor] = {}
    hook = model.blocks[stage].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            a = acts["a"]
            score = logits.gather(1, labels.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, a)
    finally:
        hook.remove()
    cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak, logits.argmax(1).detach()


def class_activation_maps(runs: list[Run], data, models_dir: Path, n_images: int,
                          stride: int = 4) -> dict | None:
    """Activation maps of each model in `runs` (seed-0 weights) on the same validation images.

    `data` is the study's :class:`~effnet.proxy.trainer.ProxyData`; models
    whose weights are not in `models_dir` are left out.
    """
    import torch.nn.functional as F
    from safetensors.torch import load_file

    if n_images < 1:
        return None
    display = max(r.scaled.resolution for r in runs)
    out: dict[str, Any] = {"keys": [], "maps": {}, "preds": {}, "labels": None, "images": None,
                           "classes": data.classes}
    for r in runs:
        path = models_dir / f"{r.key}.safetensors"
        if not path.exists():
            continue
        x, y = data.images(r.scaled.resolution, n_images)
        model = r.scaled.build(num_classes=data.num_classes, in_chans=data.in_chans)
        model.load_state_dict(load_file(str(path)))
        cam, pred = grad_cam(model, x, y, stride)
        cam = F.interpolate(cam[:, None], size=(display, display), mode="bilinear",
                            align_corners=False)[:, 0]
        out["keys"].append(r.key)
        out["maps"][r.key] = cam
        out["preds"][r.key] = pred.tolist()
        if out["images"] is None or r.scaled.resolution == display:
            out["images"] = F.interpolate(x[:, :1], size=(display, display), mode="bilinear",
                                          align_corners=False)[:, 0]
            out["labels"] = y.tolist()
    return out if out["keys"] else None
