"""Finished runs logged directly with MLflow as the suite logs them (no training): a comparison
of methods on two datasets, and the runs of a shipped plan moved to the embedded default."""

from __future__ import annotations

from pathlib import Path

#: (method, data.num_train or None for the card's default, seeds, R@1, R@5, R@10, GMACs)
COMPARISON = [
    ("zeroshot", None, (0,), 3.2, 11.0, 18.6, 0.0164),
    ("lora", None, (0, 1, 2), 19.0, 48.2, 63.1, 0.0164),
    ("tempme", None, (0, 1, 2), 21.4, 52.9, 67.5, 0.0115),
    ("tempme", "500", (0, 1), 14.0, 41.3, 58.8, 0.0115),
]
#: Another dataset and backbone (a second plot), with a preset.
PAPER = [("lora", "msrvtt", "ViT-B-32", "tempme-official", 43.1, 70.2, 80.5, 52.97),
         ("tempme", "msrvtt", "ViT-B-32", "tempme-official", 45.9, 72.4, 81.2, 34.76)]
PLAN = "tempme-ablation-components"


def log_run(client, experiment: str, tags: dict[str, str], params: dict[str, str],
            metrics: dict[str, float], status: str = "FINISHED") -> str:
    """One run as the suite logs it, without training."""
    run_id = client.create_run(experiment, tags=tags).info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id, status)
    return run_id


def figures(r1: float, r5: float, r10: float, gmacs: float, seed: int) -> dict[str, float]:
    """Plausible metrics around the given means, moved a little by the seed."""
    shift = (seed - 1) * 1.3
    return {"test/t2v_R1": r1 + shift, "test/t2v_R5": r5 + shift / 2, "test/t2v_R10": r10,
            "test/t2v_MdR": 8.0 - seed, "test/t2v_MnR": 31.5 + seed,
            "test/t2v_rsum": r1 + r5 + r10 + 1.5 * shift, "cost/video_gmacs": gmacs,
            "cost/output_tokens": 97.0 if gmacs < 0.013 else 444.0,
            "cost/params_trainable": 50_688.0, "cost/videos_per_second": 380.0 + 10 * seed,
            "cost/training_peak_mib": 812.0}


def new_store(folder: Path, experiment: str) -> tuple[str, object, str]:
    """The store in ``folder`` (made if new) and its experiment (made if new)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return uri, client, found.experiment_id
    return uri, client, client.create_experiment(experiment,
                                                 artifact_location=(folder / "art").as_uri())


def log_comparison(folder: Path) -> str:
    """Experiment ``tvr-suite``: four settings of three methods on the embedded default (one
    of tempme's with data.num_train set, one left at the card's 2000) and two on MSR-VTT."""
    uri, client, experiment = new_store(folder, "tvr-suite")
    for method, num_train, seeds, r1, r5, r10, gmacs in COMPARISON:
        for seed in seeds:
            params = {"train.seed": str(seed), "frames": "12", "train.lr": "0.01"}
            if num_train is not None:
                params["data.num_train"] = num_train
            log_run(client, experiment, {"method": method, "dataset": "synthetic",
                                         "backbone": "tiny-clip", "selected_on": "val",
                                         "preset": "None"},
                    params, figures(r1, r5, r10, gmacs, seed))
    for method, dataset, backbone, preset, r1, r5, r10, gmacs in PAPER:
        log_run(client, experiment, {"method": method, "dataset": dataset,
                                     "backbone": backbone, "selected_on": "test",
                                     "preset": preset},
                {"train.seed": "42", "frames": "12"}, figures(r1, r5, r10, gmacs, 1))
    return uri


def log_plan(folder: Path, overrides: dict[str, object] | None = None,
             rows: set[str] | None = None) -> str:
    """The runs of ``PLAN`` (those of ``rows``, default all) as ``suite bench PLAN --dataset
    synthetic [--set ...]`` logs them (tags, params, digests), with made-up figures; the
    store's URI."""
    from suite.orchestrate.plans import expand, experiment_of, load_plan

    plan = load_plan(PLAN)
    uri, client, experiment = new_store(folder, experiment_of(plan, "synthetic"))
    for i, run in enumerate(expand(plan, overrides or {}, "synthetic", check="none")):
        if rows is not None and run.row not in rows:
            continue
        config = run.config
        tags = {**run.tags(), "method": config.method, "dataset": config.dataset,
                "backbone": config.backbone, "selected_on": config.select_on,
                "preset": str(config.preset)}
        params = {k: "None" if v is None else str(v) for k, v in config.flat().items()}
        gmacs = 0.0164 - 0.0012 * i
        log_run(client, experiment, tags, params,
                figures(18.0 + 1.1 * i, 47.0 + i, 62.0 + i / 2, gmacs, run.seed % 3))
    return uri
