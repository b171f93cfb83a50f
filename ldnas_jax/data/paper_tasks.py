"""The LD-NAS paper's eight tasks (T0-T7) and their embedded mirrors (E0-E7).

T0-T3 are on MNIST (resized to 32x32x3), T4-T7 on CIFAR-10. E0-E7 keep the same label
maps on the embedded domains, so the demo and the tests can run the paper's experiment
without downloading anything. In every task the first group named is class 0.
"""

from ldnas_jax.data.tasks import Task, define_task

__all__ = ["PAPER_TASKS", "EMBEDDED_TASKS", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TEN = tuple((label,) for label in range(10))

# (groups, rest, paper description, embedded description) of tasks 0..7.
# Tasks 0-3 use the digits source, tasks 4-7 the objects source.
_DEFINITIONS = (
    (((0,),), True, "digit 0 vs rest", "digit 0 vs rest"),
    (((6,),), True, "digit 6 vs rest", "digit 6 vs rest"),
    (((1, 3, 5, 7, 9), (0, 2, 4, 6, 8)), False, "odd vs even digits", "odd vs even digits"),
    (_TEN, False, "all 10 digits", "all 10 digits"),
    (((1, 3, 8),), True, "{automobile, cat, ship} vs rest", "{square, ring, diamond} vs rest"),
    (((3, 8, 9),), True, "{cat, ship, truck} vs rest", "{ring, diamond, star} vs rest"),
    (
        ((2,), (6,), (7,)),
        True,
        "bird / frog / horse / other",
        "triangle / vertical stripes / checkerboard / other",
    ),
    (_TEN, False, "all 10 classes", "all 10 object classes"),
)


def _define_family(
    prefix: str, digits_source: str, objects_source: str, embedded: bool
) -> tuple[Task, ...]:
    tasks = []
    for index, (groups, rest, paper_text, embedded_text) in enumerate(_DEFINITIONS):
        source = digits_source if index < 4 else objects_source
        text = (
            f"{source}: {embedded_text} (mirrors T{index})"
            if embedded
            else f"{source}: {paper_text}"
        )
        tasks.append(define_task(f"{prefix}{index}", source, groups, rest=rest, description=text))
    return tuple(tasks)


PAPER_TASKS: tuple[Task, ...] = _define_family("T", "mnist", "cifar10", embedded=False)
EMBEDDED_TASKS: tuple[Task, ...] = _define_family(
    "E", "embedded_digits", "embedded_objects", embedded=True
)
