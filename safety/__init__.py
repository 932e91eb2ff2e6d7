"""The safety layer: every limit a command passes before it reaches a motor, in sim and on the arm.

The SO-101 as the gate knows it (``so101``: joint order, official ranges, lerobot units <->
radians), the validated limits (``config``), batched forward kinematics (``kinematics``), the
gate itself (``gate``), its independent re-check (``check``), the watchdog state machine
(``supervisor``), grasp-hold request shaping (``grasp_hold``) and the gymnasium wrapper that puts
the gate in front of a simulated arm (``gated_env``).

It sits at the bottom of the one-way import order ``safety < data < sim < policy < real``: it
imports none of those packages, so sim, data, policy and the arm runtime all share this one gate
(tests/test_layout.py checks the order).
"""
