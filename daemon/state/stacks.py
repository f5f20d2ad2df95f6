"""Per-stack-key background state that survives restarts: rolling stacks and sky templates."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daemon.app.parameters import stack_parameters
from daemon.app.settings import RollingSkySettings, StackSettings
from daemon.errors import InvalidInput, Retriable
from daemon.fileio.fits_io import (
    read_exposure,
    remove_stale_temporaries,
    write_bytes,
    write_json,
)
from daemon.fileio.names import safe_file_name
from processors import Exposure, RollingStack, SkyMember

__all__ = ["StackStore"]

log = logging.getLogger("skystream.stacks")


@dataclass
class KeyState:
    """Everything skystream keeps for one stack key."""

    key: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stack: RollingStack | None = None
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> path, obs_time
    sky: deque[tuple[str, SkyMember]] = field(default_factory=deque)


class StackStore:
    """Owns the rolling stacks and sky templates of every stack key, and their files.

    Stack membership is saved as JSON (member ids, files and observation times) and
    rebuilt from the member files at start; sky templates are small meshes saved as
    ``.npz``. Writes are atomic. All mutation happens under the key's lock, on the loop;
    the heavy parts run in the caller's worker threads.

    Parameters
    ----------
    folder : Path
        State folder (``stacks/`` and ``sky/`` are created inside).
    stack_settings, sky_settings
        The method settings.
    fsync : bool
        fsync state files.
    threads : int
        Threads sharing one stack's combination (``background.threads``).
    """

    def __init__(
        self,
        folder: Path,
        stack_settings: StackSettings,
        sky_settings: RollingSkySettings,
        *,
        fsync: bool = True,
        threads: int = 1,
    ) -> None:
        self._stack_dir = folder / "stacks"
        self._sky_dir = folder / "sky"
        self._stack_dir.mkdir(parents=True, exist_ok=True)
        self._sky_dir.mkdir(parents=True, exist_ok=True)
        self.stack_settings = stack_settings
        self.sky_settings = sky_settings
        self._fsync = fsync
        self._threads = threads
        self._keys: dict[str, KeyState] = {}

    def state(self, key: str) -> KeyState:
        """The state of a key (created empty on first use)."""
        if key not in self._keys:
            self._keys[key] = KeyState(key)
        return self._keys[key]

    def new_stack(self, shape: tuple[int, int]) -> RollingStack:
        """An empty stack configured from the settings."""
        return RollingStack(shape, **stack_parameters(self.stack_settings, self._threads))

    # -- persistence -----------------------------------------------------------------

    @staticmethod
    def membership(state: KeyState) -> dict[str, Any]:
        """The key's membership record: member ids with their files and observation times."""
        members = {m: state.members[m] for m in (state.stack.member_ids if state.stack else [])}
        return {"key": state.key, "members": members}

    def save_stack(self, state: KeyState) -> None:
        """Write the key's membership (blocking; call from a worker thread)."""
        write_json(
            self.membership(state),
            self._stack_dir / f"{safe_file_name(state.key)}.json",
            fsync=self._fsync,
        )

    def save_sky(self, state: KeyState) -> None:
        """Write the key's sky members as one ``.npz`` (blocking)."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"key": np.array(state.key)}
        for index, (member_id, member) in enumerate(state.sky):
            arrays[f"id_{index}"] = np.array(member_id)
            arrays[f"mesh_{index}"] = member.mesh
            arrays[f"error_{index}"] = member.error_mesh
            arrays[f"level_{index}"] = np.array(member.level)
            arrays[f"box_{index}"] = np.array(member.box_size)
        np.savez(buffer, **arrays)
        path = self._sky_dir / f"{safe_file_name(state.key)}.npz"
        write_bytes(buffer.getvalue(), path, fsync=self._fsync)

    def restore(self) -> list[str]:
        """Rebuild every saved stack from its member files and every sky template.

        Members whose file vanished or no longer fits are dropped with a warning; returns
        those warnings.
        """
        problems: list[str] = []
        for folder in (self._stack_dir, self._sky_dir):
            remove_stale_temporaries(folder)  # left by a write that a crash interrupted
        for path in sorted(self._stack_dir.glob("*.json")):
            saved = json.loads(path.read_text())
            problems += self._rebuild(self.state(saved["key"]), saved)
        for path in sorted(self._sky_dir.glob("*.npz")):
            with np.load(path) as saved:
                state = self.state(str(saved["key"]))
                index = 0
                while f"id_{index}" in saved:
                    member = SkyMember(
                        mesh=saved[f"mesh_{index}"],
                        error_mesh=saved[f"error_{index}"],
                        level=float(saved[f"level_{index}"]),
                        box_size=tuple(int(v) for v in saved[f"box_{index}"]),  # type: ignore[arg-type]
                    )
                    state.sky.append((str(saved[f"id_{index}"]), member))
                    index += 1
        for problem in problems:
            log.warning(problem)
        return problems

    def adopt(self, state: KeyState, record: dict[str, Any]) -> list[str]:
        """Take over a membership record published by another replica (blocking).

        The stack is rebuilt from the member files when its membership differs from the
        one held here; returns warnings for members that could not be read.
        """
        if self.membership(state)["members"] == record["members"]:
            return []
        state.stack = None
        state.members = {}
        problems = self._rebuild(state, record)
        for problem in problems:
            log.warning(problem)
        log.info("stack %s taken over: %d member(s)", state.key, len(state.members))
        return problems

    def _rebuild(self, state: KeyState, record: dict[str, Any]) -> list[str]:
        problems = []
        ordered = sorted(record["members"].items(), key=lambda item: item[1]["obs_time"])
        for member_id, info in ordered:
            try:
                exposure = read_exposure(Path(info["path"]))
                if state.stack is None:
                    state.stack = self.new_stack(exposure.image_shape)
                state.stack.add(member_id, exposure, info["obs_time"])
                state.members[member_id] = info
            except (InvalidInput, Retriable, ValueError) as exc:
                problems.append(f"stack {state.key}: member {member_id} dropped ({exc})")
        if state.stack is not None:
            self.save_stack(state)
        return problems

    # -- stack membership ------------------------------------------------------------

    def add_member(
        self, state: KeyState, member_id: str, exposure: Exposure, path: str, obs_time: float
    ) -> list[str]:
        """Add a background exposure to the key's stack (blocking: collapses cubes).

        Raises
        ------
        ValueError
            If its image shape differs from the stack's.
        """
        if state.stack is None:
            state.stack = self.new_stack(exposure.image_shape)
        evicted = state.stack.add(member_id, exposure, obs_time)
        state.members[member_id] = {"path": path, "obs_time": obs_time}
        for gone in evicted:
            state.members.pop(gone, None)
        return evicted

    def expire(self, state: KeyState, now: float) -> list[str]:
        """Drop members too old relative to ``now`` (observation time)."""
        if state.stack is None:
            return []
        gone = state.stack.expire(now)
        for member_id in gone:
            state.members.pop(member_id, None)
        return gone

    def add_sky(self, state: KeyState, member_id: str, member: SkyMember) -> None:
        """Remember a science frame's normalised sky (newest last, bounded)."""
        state.sky = deque(
            [(m, s) for m, s in state.sky if m != member_id], maxlen=self.sky_settings.members
        )
        state.sky.append((member_id, member))
