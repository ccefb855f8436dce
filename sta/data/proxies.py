"""The bundled synthetic tasks by name: ``easy`` (:mod:`sta.data.synthetic`), ``hard`` (:mod:`sta.data.synthetic_hard`).

Every command that falls back to the bundled model takes ``--proxy easy|hard``
(default :data:`DEFAULT_PROXY`); this module turns the name into the task, its
clips and its videos.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from sta.data.sampling import to_uint8_frames
from sta.data.synthetic import PROXY_TASK, ProxyTask
from sta.data.synthetic_hard import HARD_TASK, HardTask
from sta.errors import InvalidInput

Task = ProxyTask | HardTask
TASKS: dict[str, Task] = {"easy": PROXY_TASK, "hard": HARD_TASK}
PROXY_NAMES = tuple(TASKS)
DEFAULT_PROXY = "hard"


def get_task(task: str | Task) -> Task:
    """The task named ``task`` (``"easy"`` / ``"hard"``); a task object is returned as it is."""
    if isinstance(task, (ProxyTask, HardTask)):
        return task
    if task not in TASKS:
        raise InvalidInput(f"unknown proxy task {task!r}: choose one of {', '.join(PROXY_NAMES)}", param="proxy")
    return TASKS[task]


def make_clips(task: str | Task, num_clips: int, seed: int, split: str = "train") -> tuple[Tensor, Tensor]:
    """``num_clips`` clips of ``task`` (a name or a task) and their labels; see each task's ``make_clips``."""
    return get_task(task).make_clips(num_clips, seed, split)


def write_videos(folder: str | Path, num_clips: int, seed: int = 1234, task: str | Task = DEFAULT_PROXY,
                 fps: int = 8) -> list[Path]:
    """Held-out clips of ``task`` as video files (``<index>_<class name>.mp4``), to try `sta predict` / `sta eval` on.

    Encoded as lossless H.264 in 4:4:4 (no colour subsampling), so decoding gives
    back the generated frames up to rounding. Every frame is a clip frame, so
    sample them with ``--sampling-rate 1`` (16 frames of 16; the bundled model
    does). Also writes ``test.csv`` (``path label`` lines) for
    `sta eval --proxy <task> --data-path folder`.
    """
    import av

    task = get_task(task)
    clips, labels = task.make_clips(num_clips, seed, "test")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (clip, label) in enumerate(zip(clips, labels.tolist())):
        frames = to_uint8_frames(clip)
        path = folder / f"{i:03d}_{task.class_names[label]}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "0", "preset": "ultrafast"})
            stream.height, stream.width, stream.pix_fmt = task.size, task.size, "yuv444p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    (folder / "test.csv").write_text("".join(f"{p.name} {label}\n" for p, label in zip(paths, labels.tolist())))
    return paths
