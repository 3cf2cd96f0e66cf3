"""GraNd scores (Paul, Ganguli & Dziugaite 2021): the per-example loss-gradient norm.

GraNd(x, y) = || d loss(f(x), y) / d theta ||_2 for each example alone, computed
with ``torch.func`` (``vmap`` of ``grad`` over examples) on the scoring models
after ``scoring.epochs`` epochs, averaged over seeds. ``scoring.params.grand.layer``
picks the parameters: ``all`` (the paper's definition) or ``last`` (only the
last linear layer, DeepCore's cheaper variant); the choice and the parameter
names are recorded in the scores' metadata.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from datapruning.scores import Scores
from datapruning.scoring._common import MetricJob
from datapruning.scoring.driver import score_with_models
from datapruning.scoring.ensemble import Ensemble, build_models
from datapruning.train.evaluation import eval_mode


def last_layer_names(model: nn.Module) -> list[str]:
    """Parameter names of the last ``nn.Linear`` in module order (the classifier)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer")
    prefix = linear[-1]
    return [
        name
        for name, _ in model.named_parameters()
        if name.rsplit(".", 1)[0] == prefix or (prefix == "" and "." not in name)
    ]


def grad_norms(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    names: list[str],
    batch_size: int = 512,
) -> torch.Tensor:
    """Per-example norm of the loss gradient w.r.t. the parameters ``names`` (N,)."""
    frozen = {name: value for name, value in params.items() if name not in names}

    def loss(trainable: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor):
        logits = functional_call(model, ({**frozen, **trainable}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    trainable = {name: params[name] for name in names}
    out = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        grads = per_example(trainable, xb, yb)
        squared = sum(g.flatten(1).pow(2).sum(dim=1) for g in grads.values())
        out.append(squared.sqrt())
    return torch.cat(out)


def score_grand(job: MetricJob) -> Scores:
    """GraNd after ``scoring.epochs`` epochs, mean over ``scoring.seeds`` models."""
    layer = job.params.layer
    probe = build_models(job.dataset, job.model, [0], torch.device("cpu"))[0]
    if layer == "last":
        names = last_layer_names(probe)
    else:
        names = [name for name, _ in probe.named_parameters()]

    def scorer(ensemble: Ensemble, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(ensemble.base):
            return torch.stack(
                [
                    grad_norms(
                        ensemble.base,
                        {name: value[k] for name, value in ensemble.params.items()},
                        {name: value[k] for name, value in ensemble.buffers.items()},
                        x,
                        y,
                        names,
                    )
                    for k in range(len(ensemble))
                ]
            )

    return score_with_models(
        "grand", scorer, job, extra_params={"layer": layer, "parameters": names}
    )
