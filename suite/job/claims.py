"""Claims: a planned run is trained once, however many benches start it, on however many
machines, through any MLflow store (a local file, a database, a tracking server).

A planned run is known by its ``config_digest`` tag (suite.orchestrate.plans). MLflow offers
no compare-and-set, so a claim is made in three steps that every contender takes:

1. Look: a FINISHED run of the digest, a RUNNING one whose owner lives, or a fresh claim tag
   on the run to resume (younger than ``CLAIM_TTL``) means someone else has it: stop.
2. Claim: a new run is created RUNNING with this process as its owner; a run to resume gets
   the tag ``claim`` = this process's token.
3. Settle, then look again: after ``settle`` seconds every contender's step 2 is visible to
   every other (as long as a contender's steps 1 and 2 are less than ``settle`` apart), so all
   see the same contenders and agree: among new runs the smallest run id wins; on a resumed
   run the last claim written wins. A loser deletes what it created and stops
   (``RunClaimed``, exit code 3); a bench counts its run as busy.

A claim whose owner is gone (suite.job.ownership) does not count, so a run left by a killed
process is taken over as before.
"""

from __future__ import annotations

import os
import time
from typing import Any

from suite.errors import RunClaimed

CLAIM_TAG = "claim"
DIGEST_TAG = "config_digest"
SETTLE_ENV = "SUITE_CLAIM_SETTLE"
DEFAULT_SETTLE = 3.0  # seconds: far more than a look-up and a run creation take
CLAIM_TTL = 120.0  # a claim tag younger than this, by a live owner, still holds the run


def settle_seconds() -> float:
    """``$SUITE_CLAIM_SETTLE`` seconds, else ``DEFAULT_SETTLE``."""
    value = os.environ.get(SETTLE_ENV)
    return float(value) if value else DEFAULT_SETTLE


def token() -> str:
    """This process, as a claim names it: ``pid@host@start`` (a reused pid is another one)."""
    from suite.job.ownership import Owner

    owner = Owner.of_this_process()
    return f"{owner.pid}@{owner.host}@{owner.started:.2f}"


def _owner_of_token(value: str) -> Any:
    from suite.job.ownership import Owner

    try:
        pid, host, started = value.rsplit("@", 2)
        return Owner(int(pid), host, float(started), time.time())
    except ValueError:
        return None


def digest_runs(client: Any, experiment_id: str, digest: str) -> list[Any]:
    """Every (not deleted) run of ``digest`` in the experiment."""
    return list(client.search_runs([experiment_id], f"tags.{DIGEST_TAG} = '{digest}'",
                                   max_results=1000))


def holder(run: Any) -> str | None:
    """Who holds ``run`` now, or None: FINISHED, RUNNING with a live (or not yet recorded)
    owner."""
    from suite.job.ownership import Owner

    if run.info.status == "FINISHED":
        return f"finished as run {run.info.run_id}"
    if run.info.status != "RUNNING":
        return None
    owner = Owner.from_tags(run.data.tags)
    if owner is None:  # created a moment ago; its owner tags follow at once
        fresh = time.time() - run.info.start_time / 1000 < CLAIM_TTL
        return f"started as run {run.info.run_id}" if fresh else None
    if owner.gone():
        return None
    return f"being trained as run {run.info.run_id} by {owner.describe()}"


def check_new(client: Any, experiment_id: str, digest: str) -> None:
    """Step 1 for a new run: raise ``RunClaimed`` when a run of ``digest`` is held."""
    for run in digest_runs(client, experiment_id, digest):
        reason = holder(run)
        if reason is not None:
            raise RunClaimed(f"planned run {digest} is {reason}; not started twice")


def contest_new(client: Any, experiment_id: str, digest: str, run_id: str,
                settle: float | None = None) -> None:
    """Step 3 for the new run ``run_id`` (already RUNNING, owned by this process): after the
    settle time, a FINISHED run of the digest or a held one with a smaller id wins."""
    time.sleep(settle_seconds() if settle is None else settle)
    for run in digest_runs(client, experiment_id, digest):
        other = run.info.run_id
        if other == run_id:
            continue
        reason = holder(run)
        if reason is not None and (run.info.status == "FINISHED" or other < run_id):
            raise RunClaimed(f"planned run {digest} is {reason}, which started at the same "
                             f"time and won the claim; not trained twice")


def claim_resume(client: Any, run_id: str, settle: float | None = None) -> None:
    """Steps 1-3 for resuming ``run_id``: refuse a fresh claim by a live process; write ours;
    after the settle time the last claim written wins."""
    run = client.get_run(run_id)
    if DIGEST_TAG not in run.data.tags:  # not a planned run: the run's lock is enough
        return
    held = run.data.tags.get(CLAIM_TAG)
    mine = token()
    if held and held != mine:
        claimed_at = float(run.data.tags.get(f"{CLAIM_TAG}_time", "0") or 0)
        owner = _owner_of_token(held)
        if owner is not None and not owner.gone() and time.time() - claimed_at < CLAIM_TTL:
            raise RunClaimed(f"run {run_id} is being resumed by {held}; not resumed twice")
    client.set_tag(run_id, CLAIM_TAG, mine)
    client.set_tag(run_id, f"{CLAIM_TAG}_time", f"{time.time():.3f}")
    time.sleep(settle_seconds() if settle is None else settle)
    now = client.get_run(run_id).data.tags.get(CLAIM_TAG)
    if now != mine:
        raise RunClaimed(f"run {run_id} is being resumed by {now}, whose claim came last; "
                         f"not resumed twice")
