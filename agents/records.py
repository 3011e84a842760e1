"""Candidate records (AIDE-journal style) and the views the roles read from them.

A record is a plain dict in the graph state::

    id, parent, origin (template | designer | fixer | baseline | <role>), round, code,
    code_hash, genome, rationale, brain, status (pending | gated | evaluated | failed),
    gate (last gate report summary), fixes ([{attempt, stage, error, explanation, brain}]),
    report (EvaluationReport dump, validation split), failure (reason), timings.

Briefs for prompts and heuristics, the summary and the display are views of these.
"""

from __future__ import annotations

from typing import Any

from evaluation.pareto import objectives
from tasks.genome import genome_summary, parse_genome

ORIGINS = ("template", "designer", "fixer", "baseline")


def code_hash(code: str) -> str:
    """Return the short form (16 hex digits) of the evaluation's code hash.

    One hash for records, traces, reports and cache keys: comments and layout aside,
    the same code has the same name everywhere.
    """
    from tools.evaluate import code_hash as full_hash  # lazy: tools.evaluate imports torch

    return full_hash(code)[:16]


def new_record(cid: str, *, code: str, origin: str, parent: str | None, round_: int,
               rationale: str = "", brain: str = "") -> dict[str, Any]:
    """Create a fresh pending candidate record."""
    genome = parse_genome(code)
    return {
        "id": cid,
        "parent": parent,
        "origin": origin,
        "round": round_,
        "code": code,
        "code_hash": code_hash(code),
        "genome": genome.model_dump(mode="json") if genome else None,
        "rationale": rationale,
        "brain": brain,
        "status": "pending",
        "gate": None,
        "fixes": [],
        "report": None,
        "failure": None,
        "timings": {},
    }


def is_ok(rec: dict[str, Any]) -> bool:
    """Tell whether the candidate was evaluated successfully."""
    rep = rec.get("report")
    return rec.get("status") == "evaluated" and bool(rep) and rep.get("status") == "ok"


def headline(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """Compact numbers of one candidate (what prompts, critic and display show)."""
    if rec is None:
        return None
    rep = rec.get("report") or {}
    out: dict[str, Any] = {
        "id": rec["id"],
        "origin": rec.get("origin"),
        "parent": rec.get("parent"),
        "status": "ok" if is_ok(rec) else ("failed" if rec.get("status") == "failed" else
                                            rec.get("status")),
        "design": genome_summary(g) if (g := parse_genome(rec.get("code") or "")) else "custom",
    }
    if rec.get("status") == "failed" or rep.get("status") == "failed":
        out["failure_stage"] = rep.get("failure_stage") or (rec.get("gate") or {}).get("stage")
        out["failure_reason"] = rec.get("failure") or rep.get("failure_reason")
    if not is_ok(rec):
        return out
    m, hw = rep["metrics"], rep["hardware"]
    out.update(
        balanced_accuracy=round(m["balanced_accuracy"], 4),
        accuracy=round(m["accuracy"], 4),
        violations=list(rep.get("violations") or []),
        params=hw["params"],
        flops=hw["flops"],
        latency_ms=round(hw["latency_ms_median"], 3),
        memory_mb=round(hw["size_mb"] + hw["peak_activation_mb"], 3),
        groups={
            attr: [{"group": g["group"], "count": g["count"], "accuracy": round(g["accuracy"], 4),
                    **({"gap_interval": [round(x, 3) for x in g["gap_interval"]]}
                       if g.get("gap_interval") else {})}
                   for g in fair["groups"]]
            for attr, fair in (rep.get("fairness") or {}).items() if attr != "sex_x_age"
        },
        gap_intervals={
            attr: [round(x, 3) for x in fair["max_gap_interval"]]
            for attr, fair in (rep.get("fairness") or {}).items()
            if attr != "sex_x_age" and fair.get("max_gap_interval")
        },
    )
    try:
        obj = objectives(rep)
        out["max_gap"] = round(obj[1], 4)
    except ValueError:
        out["max_gap"] = None
    return out


def score(rec: dict[str, Any], unfairness_weight: float) -> float:
    """Compute the selection score ``balanced_accuracy - w * mean_attr max_gap`` (higher wins)."""
    rep = rec["report"]
    _, unfair, _ = objectives(rep)
    return rep["metrics"]["balanced_accuracy"] - unfairness_weight * unfair


def select_best(candidates: dict[str, dict[str, Any]], unfairness_weight: float = 1.0,
                *, include_baselines: bool = False) -> str | None:
    """Return the best design by the documented rule.

    Rule: among successfully evaluated candidates, feasible ones (no budget violation)
    come first; within a class the highest ``balanced_accuracy - w * unfairness`` wins
    (unfairness = mean over sex and age of the max group-accuracy gap); ties go to fewer
    parameters, then the earlier candidate. Infeasible candidates rank by fewer
    violations first. Baselines are references, not designs, unless included.
    """
    ranked = []
    for i, (cid, rec) in enumerate(candidates.items()):
        if not is_ok(rec) or (rec.get("origin") == "baseline" and not include_baselines):
            continue
        try:
            s = score(rec, unfairness_weight)
        except ValueError:
            continue
        n_viol = len(rec["report"].get("violations") or [])
        ranked.append(((n_viol > 0, n_viol, -s, rec["report"]["hardware"]["params"], i), cid))
    return min(ranked)[1] if ranked else None


def history(candidates: dict[str, dict[str, Any]], order: list[str],
            limit: int = 12) -> list[dict[str, Any]]:
    """Compact history of the newest ``limit`` candidates (tried designs and failures)."""
    rows = []
    for cid in order[-limit:]:
        h = headline(candidates[cid]) or {}
        h.pop("groups", None)
        rows.append(h)
    return rows


def tried_keys(candidates: dict[str, dict[str, Any]]) -> list[str]:
    """Genome keys of every candidate so far (the heuristic never re-proposes one)."""
    from agents.heuristic import genome_key
    out = []
    for rec in candidates.values():
        g = parse_genome(rec.get("code") or "")
        if g is not None:
            out.append(genome_key(g))
    return out
