"""The closed loop: accuracy profile x hardware query -> the best device (design.md §1)."""

from fitformer.select.loop import Constraints, SelectResult, select
from fitformer.select.profile import GRID, Profile, ProfilePoint

__all__ = ["GRID", "Constraints", "Profile", "ProfilePoint", "SelectResult", "select"]
