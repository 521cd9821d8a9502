"""What ``python -m benchmarks.evidence`` measures: its configurations, the library's recipes
by table row, and every claim of the chapter as a controlled comparison.

A claim is ``(task, images per class, {condition: Run})``: one factor changes between the
conditions, everything else (data, split, seeds, epochs) stays.

Example:
    >>> from benchmarks.evidence_config import CONFIGS, claims
    >>> sorted(claims(CONFIGS["smoke"]))[:2]
    ['backbone_lr', 'backbone_lr_bn_adapting']
"""

from __future__ import annotations

from typing import Any, Callable

import transferlearn as tl

from .evidence_lib import NORMS, Run

__all__ = ["RECIPES", "CONFIGS", "SIMILAR", "BASE", "claims"]

# The library's recipes, named by the table row they come from.
RECIPES: dict[str, Callable[[], tl.Strategy]] = {
    "feature_extraction": lambda: tl.recommend_strategy(10),
    "fine_tune_last": lambda: tl.recommend_strategy(5000),
    "fine_tune_all": lambda: tl.recommend_strategy(20000),
    # the chapter's different-domain recipe (the library's until this evidence changed it)
    "fine_tune_all_far": lambda: tl.Strategy("fine_tune_all", 2, 5, 1e-3, (1e-5, 1e-4), None, "early", True, True,
                                             "the chapter's different-domain recipe"),
}

# full: 5 seeds, ~40 min with 1 thread on a shared 2-core machine; quick: a few minutes; smoke: digits only, for CI.
CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"seeds": [0, 1, 2, 3, 4], "sizes": {"chess": 128, "elpv": 128, "digits": 64},
             "test_per_class": {"chess": 25, "elpv": 150, "digits": 50},
             "claim_task": "chess", "claim_n": 30, "grey_task": "elpv", "grey_n": 100,
             "table": {"chess": [10, 30, 50], "elpv": [10, 30, 100], "digits": [10, 30, 100]},
             "far_tasks": {"elpv": 100, "digits": 100}, "probe": {"chess": 30, "digits": 100},
             "head_epochs": [5, 20, 50, 200],
             "resolutions": [96, 128, 160, 224]},
    "quick": {"seeds": [0, 1, 2], "sizes": {"chess": 64, "elpv": 64, "digits": 32},
              "test_per_class": {"chess": 20, "elpv": 50, "digits": 20},
              "claim_task": "chess", "claim_n": 15, "grey_task": "elpv", "grey_n": 20,
              "table": {"chess": [10, 30], "elpv": [10, 30], "digits": [10]},
              "far_tasks": {"elpv": 30, "digits": 30}, "probe": {"chess": 15, "digits": 30},
              "head_epochs": [5, 50, 200], "resolutions": []},
    "smoke": {"seeds": [0], "sizes": {"digits": 32}, "test_per_class": {"digits": 5},
              "claim_task": "digits", "claim_n": 3, "grey_task": "digits", "grey_n": 3,
              "table": {"digits": [3]}, "far_tasks": {"digits": 3}, "probe": {"digits": 3}, "head_epochs": [2],
              "resolutions": [],
              "epochs": {"warmup_epochs": 1, "finetune_epochs": 1}},
}
SIMILAR = {"chess": True, "elpv": False, "digits": False}
BASE = {"warmup_epochs": 2, "finetune_epochs": 3, "head_lr": 1e-3, "backbone_lr": 1e-4, "freeze_bn": True}


def claims(cfg: dict[str, Any]) -> dict[str, tuple[str, int, dict[str, Run]]]:
    """Each claim: (task, images per class, {condition: run}), in the order they run."""
    return _chapter_claims(cfg) | _far_claims(cfg)


def _chapter_claims(cfg: dict[str, Any]) -> dict[str, tuple[str, int, dict[str, Run]]]:
    """The chapter's claims: strategies, BatchNorm, warm-up, backbone rates, normalisation, greyscale."""
    c, n, g, gn = cfg["claim_task"], cfg["claim_n"], cfg["grey_task"], cfg["grey_n"]
    recipe = {**BASE, **cfg.get("epochs", {})}
    fe = {"strategy": RECIPES["feature_extraction"](), **cfg.get("epochs", {}), "finetune_epochs": 0}
    epochs = recipe["warmup_epochs"] + recipe["finetune_epochs"]

    def base(**changes: Any) -> dict[str, Any]:
        """The chapter's fine-tuning recipe (the library's ``fine_tune_all``) with one change."""
        return {**recipe, **changes}

    return {
        "strategies": (c, n, {
            "random init (1e-3 everywhere, BN adapting)": Run(
                fit=base(warmup_epochs=0, finetune_epochs=epochs, backbone_lr=1e-3, freeze_bn=False),
                pretrained=False),
            "feature extraction (library default)": Run(fit=fe, train_mode_eval=True),
            "fine-tune last 2 groups": Run(fit=base(unfreeze=2)),
            "fine-tune all (baseline)": Run(fit=base(), train_mode_eval=True)}),
        "batchnorm": (c, n, {f"BN {'pinned' if pin else 'adapting'}, batch {bs}": Run(fit=base(freeze_bn=pin),
                                                                                      batch_size=bs)
                             for bs in (8, 32) for pin in (True, False)}),
        "warmup": (c, n, {f"{w} warm-up epochs": Run(fit=base(warmup_epochs=w)) for w in (0, 2, 10)}),
        "backbone_lr": (c, n, {f"backbone lr {lr}": Run(fit=base(backbone_lr=lr))
                               for lr in (1e-2, 1e-3, 1e-4, (1e-5, 1e-3))}),
        "backbone_lr_low": (c, n, {f"backbone lr {lr}": Run(fit=base(backbone_lr=lr))
                                   for lr in (1e-4, 1e-5, (1e-5, 1e-4))}),
        "backbone_lr_bn_adapting": (c, n, {f"backbone lr {lr}, BN adapting": Run(fit=base(backbone_lr=lr,
                                                                                           freeze_bn=False))
                                           for lr in (1e-2, 1e-3, 1e-4)}),
        "normalisation_fe": (c, n, {norm: Run(fit=fe, norm=norm) for norm in NORMS}),
        "normalisation_ft": (c, n, {norm: Run(fit=base(), norm=norm) for norm in NORMS}),
        "greyscale_fe": (g, gn, {stem: Run(fit=fe, stem=stem) for stem in ("replicate", "summed", "fresh")}),
        "greyscale_ft": (g, gn, {stem: Run(fit=base(), stem=stem) for stem in ("replicate", "summed", "fresh")}),
    }


def _far_claims(cfg: dict[str, Any]) -> dict[str, tuple[str, int, dict[str, Run]]]:
    """For each far-domain task: the chapter's different-domain recipe, one factor changed at a time."""
    far = {"strategy": RECIPES["fine_tune_all_far"](), **cfg.get("epochs", {})}
    return {f"far_recipe_{t}": (t, tn, {
        "far recipe (the chapter's)": Run(fit=far, augment=True),
        "without augmentation": Run(fit=far, augment=False),
        "flat backbone lr 1e-4": Run(fit={**far, "backbone_lr": 1e-4}, augment=True),
        "BN pinned everywhere": Run(fit={**far, "freeze_bn": True}, augment=True),
        "similar-domain recipe (fine_tune_all)": Run(fit={"strategy": RECIPES["fine_tune_all"](),
                                                          **cfg.get("epochs", {})})})
        for t, tn in cfg["far_tasks"].items()}
