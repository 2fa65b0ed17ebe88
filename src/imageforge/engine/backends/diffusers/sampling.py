"""The diffusers scheduler of each `Sampler` and `Schedule`, swapped in for one job and the model's own put back.

A request's sampler is a scheduler built `from_config` on the model's own scheduler's config, so that it keeps the
model's training schedule (betas, timestep spacing, prediction type) and changes only the sampling method.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imageforge.domain import SAMPLER_SCHEDULES, Sampler, Schedule

#: The scheduler class and the config values that make each sampler.
SCHEDULERS: Mapping[Sampler, tuple[str, Mapping[str, Any]]] = {
    Sampler.EULER: ("EulerDiscreteScheduler", {}),
    Sampler.EULER_A: ("EulerAncestralDiscreteScheduler", {}),
    Sampler.HEUN: ("HeunDiscreteScheduler", {}),
    Sampler.DPM2: ("KDPM2DiscreteScheduler", {}),
    Sampler.DPM2_A: ("KDPM2AncestralDiscreteScheduler", {}),
    Sampler.DPMPP_2M: ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    Sampler.DPMPP_2M_SDE: ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    Sampler.DDIM: ("DDIMScheduler", {}),
    # Without the Runge-Kutta warm-up steps PNDM is PLMS, and the step count is the one asked for.
    Sampler.PNDM: ("PNDMScheduler", {"skip_prk_steps": True}),
    Sampler.UNIPC: ("UniPCMultistepScheduler", {}),
    Sampler.LCM: ("LCMScheduler", {}),
    Sampler.DEIS: ("DEISMultistepScheduler", {}),
}
#: The config flag of each schedule but the default.
SCHEDULE_FLAGS: Mapping[Schedule, str] = {
    Schedule.KARRAS: "use_karras_sigmas",
    Schedule.EXPONENTIAL: "use_exponential_sigmas",
}
#: Flow-matching schedulers: they run as Euler and are never swapped.
_FLOW_MATCHING = {"FlowMatchEulerDiscreteScheduler": Sampler.EULER}


def is_flow_matching(scheduler: Any) -> bool:
    """Whether `scheduler` samples by flow matching (FLUX), where the samplers above do not apply."""
    return type(scheduler).__name__ in _FLOW_MATCHING


def build(own: Any, sampler: Sampler, schedule: Schedule) -> Any:
    """The scheduler of `sampler` with `schedule`, configured from the model's own scheduler `own`."""
    import diffusers

    name, values = SCHEDULERS[sampler]
    config = dict(values)
    if schedule is not Schedule.DEFAULT:
        # One spacing at a time: the model's own config may turn on another.
        config |= {flag: flag == SCHEDULE_FLAGS[schedule] for flag in SCHEDULE_FLAGS.values()}
    return getattr(diffusers, name).from_config(own.config, **config)


def named(scheduler: Any) -> tuple[Sampler | None, Schedule | None]:
    """The sampler and schedule `scheduler` runs, or None for each this module has no name for."""
    name = type(scheduler).__name__
    if name in _FLOW_MATCHING:
        return _FLOW_MATCHING[name], Schedule.DEFAULT
    config = scheduler.config
    sampler = next(
        (
            sampler
            for sampler, (class_name, values) in SCHEDULERS.items()
            if class_name == name and all(config.get(key) == value for key, value in values.items())
        ),
        None,
    )
    on = [schedule for schedule, flag in SCHEDULE_FLAGS.items() if config.get(flag)]
    if sampler is None or len(on) > 1 or (on and on[0] not in SAMPLER_SCHEDULES[sampler]):
        return sampler, None
    return sampler, on[0] if on else Schedule.DEFAULT


def described(scheduler: Any) -> dict[str, Any]:
    """`scheduler` as a manifest records it: its class and its config as JSON values. Numpy and tuple values
    become lists and numbers; an infinite or NaN float (DPM-Solver's `lambda_min_clipped` is -inf) becomes its
    text, since strict JSON, which the job store's SQLite reads, has no such numbers; anything else its text."""
    config = json.loads(json.dumps(dict(scheduler.config), default=_plain), parse_constant=str)
    return {"class": type(scheduler).__name__, "config": config}


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else str(value)
