"""Offscreen camera rendering for the twin, tuned for CPU rasterizers.

MuJoCo renders through EGL (Mesa llvmpipe) here. Shadows and multisampling cost 10-100x on a CPU,
so ``fast=True`` switches both off (the scenes also declare it); ``fast=False`` keeps MuJoCo's
defaults and exists as the reference the speed benchmark compares against.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402


class CameraRig:
    """Renders named cameras of one model at one image size into uint8 [H, W, 3] arrays."""

    def __init__(
        self,
        model: mujoco.MjModel,
        cameras: tuple[str, ...],
        height: int,
        width: int,
        fast: bool = True,
    ):
        for cam in cameras:
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(
                    f"camera {cam!r} is not in the scene; choose from {camera_names(model)}"
                )
        if fast:
            model.vis.quality.shadowsize = 0
            model.vis.quality.offsamples = 0
        else:
            model.vis.quality.shadowsize = 4096
            model.vis.quality.offsamples = 4
            # MuJoCo's default light casts shadows; the scenes switch that off, so restore it.
            model.light_castshadow[:] = True
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.cameras = cameras
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        if not fast:
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = True
        else:
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """Images of every camera for the current state: {camera: uint8 [H, W, 3]}."""
        images = {}
        for cam in self.cameras:
            self._renderer.update_scene(data, camera=cam)
            images[cam] = self._renderer.render().copy()
        return images

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def camera_names(model: mujoco.MjModel) -> list[str]:
    return [model.camera(i).name for i in range(model.ncam)]
