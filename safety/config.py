"""The safety gate's limits: one validated config in SI units (rad, m, s, °C), hashed into logs.

Defaults are SAFETY.md's for the SO-101 at 30 Hz. Per-tick limits are derived from ``control_hz``
so that a different loop rate keeps the same physical limits. Nothing is "unlimited": every
field must be a finite, positive number, so a config can only be made looser on purpose.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from safety import so101
from safety.so101 import SO101_JOINTS


def _deg(*values: float) -> list[float]:
    return [math.radians(v) for v in values]


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in the arm's base frame (m): ``low`` and ``high`` corners [x, y, z]."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def __post_init__(self):
        if len(self.low) != 3 or len(self.high) != 3:
            raise ValueError(f"a box needs 3 coordinates per corner, got {self.low}, {self.high}")
        if not all(math.isfinite(v) for v in (*self.low, *self.high)):
            raise ValueError(f"box corners must be finite, got {self.low}, {self.high}")
        if not all(lo < hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(
                f"box low corner must be below the high corner: {self.low} {self.high}"
            )


@dataclass(frozen=True)
class SafetyConfig:
    """Limits every command passes before it reaches a motor (sim and hardware alike).

    Joint quantities are per joint in lerobot's SO-101 motor order (shoulder_pan, shoulder_lift,
    elbow_flex, wrist_flex, wrist_roll, gripper); the gripper's are angles of its jaw joint.
    """

    # Control loop rate (Hz); per-tick limits are the SI limits times 1/control_hz.
    control_hz: float = 30.0
    # Soft margin kept inside each joint's calibrated range (rad); default 5°.
    joint_margin_rad: float = math.radians(5.0)
    # Fastest commanded joint speed (rad/s); default 3°/5°/6° per tick at 30 Hz (SAFETY.md).
    max_joint_speed_rad_s: list[float] = field(
        default_factory=lambda: _deg(90.0, 90.0, 90.0, 150.0, 150.0, 180.0)
    )
    # Largest change of commanded joint speed (rad/s²); default 0.7°/tick² at 30 Hz (~630°/s²).
    # The gripper gets more: its jaw opens and closes in a fraction of a second.
    max_joint_accel_rad_s2: list[float] = field(
        default_factory=lambda: _deg(630.0, 630.0, 630.0, 630.0, 630.0, 1800.0)
    )
    # Cap on the commanded speed of the tool point and of the elbow (m/s).
    max_tool_speed_m_s: float = 0.25
    # Operator's explicit statement that nobody is within reach: allows fast_tool_speed_m_s.
    no_person_present: bool = False
    fast_tool_speed_m_s: float = 0.5
    # Workspace every checked point (elbow, wrist, tool, fingertips) must stay inside (m).
    workspace: Box = field(default_factory=lambda: Box((-0.10, -0.40, -0.05), (0.45, 0.40, 0.45)))
    # Height of the table top in the base frame (m) and the clearance each point keeps above it.
    table_z_m: float = 0.0
    table_clearance_m: float = 0.02
    # The jaws must reach the table to pick small objects; their tips only must not go through it.
    fingertip_table_clearance_m: float = 0.0
    # Volumes no checked point may enter, each inflated by keep_out_margin_m (default: the base
    # and the shoulder motor, so the gripper never folds into the arm's own foot).
    keep_out: list[Box] = field(
        default_factory=lambda: [Box((-0.035, -0.05, -0.05), (0.07, 0.05, 0.07))]
    )
    keep_out_margin_m: float = 0.03
    # Interpolated configurations checked between consecutive commands (besides the endpoint).
    interpolation_points: int = 4
    # Invalid actions in a row that latch a protective stop.
    invalid_latch_count: int = 3
    # An action's timestamp may lead the gate's clock by at most this much (s).
    future_tolerance_s: float = 0.005
    # Tracking bound: |command - measured| beyond this for tracking_timeout_s -> stall handling.
    tracking_error_rad: float = math.radians(15.0)
    tracking_timeout_s: float = 0.5
    # Speed fraction while ramping to the first commands after engage/resume (guarded ramp).
    ramp_speed_fraction: float = 0.3
    # Freshness (the supervisor applies them): command stale -> smooth halt / park + torque off.
    command_stale_hold_s: float = 0.1
    command_stale_park_s: float = 2.0
    observation_max_age_s: float = 0.1
    frozen_frame_count: int = 5
    # Bus: failed reads in a row that count as a fault; silence that signals a power cut (s).
    bus_failed_reads: int = 3
    bus_dead_s: float = 0.5
    # Servo temperature: derate speed to derate_fraction at or above derate_c; park at park_c.
    temperature_derate_c: float = 55.0
    temperature_park_c: float = 62.0
    derate_fraction: float = 0.5
    # Gripper torque cap (fraction of the servo's maximum).
    gripper_torque_limit: float = 0.5
    # The gripper's cap while a grasp-hold squeezes an object: below the Overload_Torque lerobot
    # writes for the gripper (25 %), so its overload protection does not trip while it holds.
    grasp_torque_limit: float = 0.22
    # Gate compute budget per tick (s) and overruns in a row that trigger a protective stop.
    compute_budget_s: float = 0.002
    overrun_latch_count: int = 5

    def __post_init__(self):
        for name in ("max_joint_speed_rad_s", "max_joint_accel_rad_s2"):
            values = getattr(self, name)
            if len(values) != len(SO101_JOINTS):
                raise ValueError(
                    f"{name} needs {len(SO101_JOINTS)} values {SO101_JOINTS}, got {len(values)}"
                )
            _check_positive(name, values)
        _check_positive(
            "scalar limits",
            [
                self.control_hz,
                self.max_tool_speed_m_s,
                self.fast_tool_speed_m_s,
                self.tracking_error_rad,
                self.tracking_timeout_s,
                self.command_stale_hold_s,
                self.command_stale_park_s,
                self.observation_max_age_s,
                self.bus_dead_s,
                self.compute_budget_s,
            ],
        )
        for name in ("joint_margin_rad", "table_clearance_m", "keep_out_margin_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.fingertip_table_clearance_m)):
            raise ValueError("fingertip_table_clearance_m must be finite")
        if self.fast_tool_speed_m_s < self.max_tool_speed_m_s:
            raise ValueError("fast_tool_speed_m_s must be >= max_tool_speed_m_s")
        if not 0 < self.ramp_speed_fraction <= 1 or not 0 < self.derate_fraction <= 1:
            raise ValueError("ramp_speed_fraction and derate_fraction must be in (0, 1]")
        if not 0 < self.gripper_torque_limit <= 1:
            raise ValueError("gripper_torque_limit must be in (0, 1]")
        if not 0 < self.grasp_torque_limit <= self.gripper_torque_limit:
            raise ValueError(
                f"grasp_torque_limit must be in (0, gripper_torque_limit="
                f"{self.gripper_torque_limit}], got {self.grasp_torque_limit}"
            )
        if self.temperature_derate_c >= self.temperature_park_c:
            raise ValueError("temperature_derate_c must be below temperature_park_c")
        if self.command_stale_hold_s >= self.command_stale_park_s:
            raise ValueError("command_stale_hold_s must be below command_stale_park_s")
        for name in (
            "interpolation_points",
            "invalid_latch_count",
            "frozen_frame_count",
            "bus_failed_reads",
            "overrun_latch_count",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.invalid_latch_count > 10:
            raise ValueError("invalid_latch_count above 10 would let bad input run for too long")

    # ------------------------------------------------------------------ derived
    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz

    def step_limit(self) -> np.ndarray:
        """Largest command change per tick [6] (rad)."""
        return np.asarray(self.max_joint_speed_rad_s) * self.dt

    def accel_limit(self) -> np.ndarray:
        """Largest change of the per-tick step [6] (rad/tick²)."""
        return np.asarray(self.max_joint_accel_rad_s2) * self.dt**2

    def tool_speed_cap(self) -> float:
        return self.fast_tool_speed_m_s if self.no_person_present else self.max_tool_speed_m_s

    def to_json(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Short content hash of the limits: logged with every tick and stored in datasets."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: dict) -> SafetyConfig:
        data = dict(data)
        data["workspace"] = Box(**data["workspace"])
        data["keep_out"] = [Box(**b) for b in data.get("keep_out", [])]
        return cls(**data)


def _check_positive(name: str, values) -> None:
    for v in values:
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0 (no unlimited values), got {v}")


def joint_limits_rad(calibration: dict | None = None) -> np.ndarray:
    """Joint ranges [6, 2] (rad) the gate keeps inside, before its margin.

    The MJCF's official ranges, narrowed by a lerobot calibration when given (per motor
    ``range_min``/``range_max`` in steps; arm joints map to degrees around the middle of the
    range, the gripper's range to its jaw travel).
    """
    limits = so101.JOINT_LIMITS_RAD.copy()
    if calibration is None:
        return limits
    missing = [name for name in SO101_JOINTS if name not in calibration]
    if missing:
        raise ValueError(f"calibration has no entry for {missing}; recalibrate the arm")
    for i, name in enumerate(SO101_JOINTS[:-1]):
        lo, hi = calibration[name]["range_min"], calibration[name]["range_max"]
        if not lo < hi:
            raise ValueError(f"calibration of {name}: range_min {lo} >= range_max {hi}")
        half = math.radians((hi - lo) / 2 * 360.0 / 4095)
        limits[i] = (max(limits[i, 0], -half), min(limits[i, 1], half))
    return limits
