"""Training recipes: named lists of phases, as data. The training engine (`trafficcore.training.engine`) runs
them; nothing here imports torch or the loop.

A phase says what trains, for how long (epochs over its samples, or optimiser steps), at what learning
rate, on which samples (every training sample, a random draw, or a share of samples whose text mentions an
event), and which validation samples early-stop it. A recipe adds the architecture it is meant for and how
the data are read. Lengths are steps or epochs, never minutes, so the same recipe gives the same model on a
fast and a slow machine; `guard_minutes` only stops a phase that overruns, and the model's metrics then say
so (`metrics["clock_cut"]`), as the training CLI and the benchmark do loudly.

Why phases. The numeric skip path trains thousands of times faster than the transformer. On a CPU the
`numeric` phase fits it over every training sample, then the `text` phase trains the transformer (its head
starts at exactly zero) to correct what the numeric path misses, early-stopped on validation including its
starting point, so the model never ends worse than its numeric path on validation. On a GPU there is
compute for the transformer to learn end to end with the numeric tokens (`gpu`). Measured outcomes of each
recipe are in docs/MODEL_REPORT.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

TRAINS = ("numeric", "text", "all")
SAMPLERS = ("all", "random", "events")


@dataclass(frozen=True)
class Phase:
    """One stage of training (see the module docstring)."""

    name: str
    # numeric: the skip path alone (the transformer is not computed); text: everything but the skip path, which
    # stays as the previous phase left it; all: every trainable tensor
    trains: str
    epochs: float | None = None  # over the phase's samples; or
    steps: int | None = None  # optimiser steps
    max_steps: int | None = None  # with epochs: at most this many steps (a dataset many times larger than SCATS)
    batch_size: int = 64
    lr: float = 1e-3  # new parameters: projections, heads, skip path
    encoder_lr: float = 5e-4  # pretrained encoder weights or their LoRA adapters
    warmup_frac: float = 0.05
    schedule: str = "cosine"
    evals: int = 8  # early-stopping evaluations over the phase
    patience: int = 4
    sampler: str = "all"  # all: every training sample; random: `samples` of them; events: see `event_share`
    samples: int | None = None  # random / events: how many training samples the phase draws
    event_share: float = 0.0  # events: this share of the drawn samples (and of the early-stopping subset)
    keep_start: bool = False  # score the starting weights too: the phase can only improve on them
    fgm_eps: float = 0.0  # adversarial training (FGM) on the input embeddings; 0 = off
    amp: str = "auto"  # mixed precision on CUDA: auto | bf16 | fp16 | off
    guard_minutes: float | None = None  # clock guard: stop (and say so) if the phase runs longer

    def __post_init__(self) -> None:
        if self.trains not in TRAINS:
            raise ValueError(f"phase {self.name!r}: trains must be one of {TRAINS}, not {self.trains!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"phase {self.name!r}: sampler must be one of {SAMPLERS}, not {self.sampler!r}")
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"phase {self.name!r}: give its length as epochs or as steps (one of them)")
        if self.sampler != "all" and not self.samples:
            raise ValueError(f"phase {self.name!r}: sampler {self.sampler!r} needs `samples`")

    def n_steps(self, n_samples: int) -> int:
        """Optimiser steps over `n_samples` training samples."""
        if self.steps is not None:
            return max(1, int(self.steps))
        steps = max(1, int(self.epochs * n_samples / self.batch_size))
        return min(steps, self.max_steps) if self.max_steps else steps


@dataclass(frozen=True)
class Recipe:
    """A named list of phases, the architecture it trains (LMConfig overrides) and how the data are read."""

    name: str
    purpose: str
    phases: tuple[Phase, ...]
    model: dict = field(default_factory=dict)
    leave_own_out: bool = True  # training inputs read the profile without their own row's reading
    val_samples: int = 8192  # validation samples for the final metrics and the band calibration
    eval_samples: int = 2048  # the first n of those early-stop each phase (cheaper than all)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["phases"] = [asdict(p) for p in self.phases]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        return cls(**{**d, "phases": tuple(Phase(**p) for p in d["phases"])})

    def with_changes(self, phases: dict[str, dict] | None = None, **changes) -> Recipe:
        """A copy with recipe fields changed and, by phase name, phase fields changed."""
        new = tuple(replace(p, **(phases or {}).get(p.name, {})) for p in self.phases)
        unknown = set(phases or {}) - {p.name for p in self.phases}
        if unknown:
            raise ValueError(f"recipe {self.name!r} has no phase {sorted(unknown)}")
        return replace(self, phases=new, **changes)


#: The numeric phase on a CPU; 65,000 steps of 256 hold SCATS's 60 epochs and keep a 20x larger dataset
#: (Aarhus) inside the CPU recipe's hour.
_NUMERIC_CPU = dict(trains="numeric", batch_size=256, lr=2e-3, warmup_frac=0.02, patience=3, max_steps=65_000)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        "demo", "the shipped demo model: late fusion over event text, a fixed number of steps (~7 min CPU)",
        phases=(
            Phase("numeric", epochs=6.0, **_NUMERIC_CPU),
            Phase("text", trains="text", steps=3000, batch_size=256, lr=1e-3, warmup_frac=0.03, evals=12,
                  patience=6, sampler="events", samples=393216, event_share=0.5, keep_start=True),
        ),
        model={"num_layers": 2, "extra_tokens": ("long",), "max_text_tokens": 128, "fusion": "late",
               "mode": "frozen", "event_details": True, "text_scope": "events"},
        leave_own_out=False, val_samples=4096, eval_samples=2048,
    ),
    Recipe(
        "quick", "a first model in ~10 min on 2 CPU cores: short numeric phase, 600 LoRA steps",
        phases=(
            Phase("numeric", epochs=6.0, **_NUMERIC_CPU),
            Phase("text", trains="text", steps=600, batch_size=64, evals=4, patience=3, sampler="random",
                  samples=600 * 64, keep_start=True, guard_minutes=15.0),
        ),
        model={"num_layers": 2, "extra_tokens": ("long",)},
        val_samples=4096, eval_samples=2048,
    ),
    Recipe(
        "full", "the CPU recipe (<= 60 min on 2 cores): 4-member numeric path for 60 epochs, 1,200 LoRA steps",
        phases=(
            Phase("numeric", epochs=60.0, **_NUMERIC_CPU),
            Phase("text", trains="text", steps=1200, batch_size=64, evals=6, patience=3, sampler="random",
                  samples=1200 * 64, keep_start=True, guard_minutes=30.0),
        ),
        model={"num_layers": 2, "extra_tokens": ("long",), "skip_members": 4},
        val_samples=12288, eval_samples=3072,
    ),
    Recipe(
        "gpu", "the GPU recipe (<= 10 min on one H200): all six encoder layers fine-tuned end to end with the "
               "numeric tokens in bf16",
        phases=(
            Phase("end_to_end", trains="all", steps=12000, batch_size=256, lr=1e-3, encoder_lr=5e-4, evals=24,
                  patience=6, amp="bf16", guard_minutes=9.0),
        ),
        model={"num_layers": None, "mode": "full", "skip": False, "extra_tokens": ("long",)},
        val_samples=12288, eval_samples=4096,
    ),
)}


#: The demo recipe with event texts read as a scenario note is read (`trafficcore.notes`): times only relative to
#: the issue time, and "on this road". Issue 14's candidate for the shipped demo model; measured against it in
#: data/demo_model/README.md, and not shipped (its validation MAE is not better).
RECIPES["demo-notes"] = replace(
    RECIPES["demo"], name="demo-notes",
    purpose="the demo recipe with event texts read as notes are read: relative times only, 'on this road'",
    model={**RECIPES["demo"].model, "event_times": "relative", "event_road": True})


def get_recipe(name_or_recipe: str | Recipe) -> Recipe:
    """A recipe by name (or the recipe itself), with a clear error naming the choices."""
    if isinstance(name_or_recipe, Recipe):
        return name_or_recipe
    try:
        return RECIPES[name_or_recipe]
    except KeyError:
        raise ValueError(f"unknown preset {name_or_recipe!r}; choose from {', '.join(sorted(RECIPES))}") from None


def update_phase(steps: int, lr: float, numeric_only: bool, guard_minutes: float | None = None) -> Phase:
    """The continual-update phase: a short fine-tune from the current weights, never ending worse than them
    on validation; only the numeric path trains when the transformer adds nothing (its head is zero)."""
    return Phase("update", trains="numeric" if numeric_only else "all", steps=max(1, steps),
                 batch_size=256 if numeric_only else 64, lr=lr, encoder_lr=lr / 2, evals=6, patience=3,
                 keep_start=True, guard_minutes=guard_minutes)
