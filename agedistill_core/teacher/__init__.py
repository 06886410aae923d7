"""The teacher: members (age networks) soft-voted on one 0..100 age axis.

``MEMBERS`` maps a name to a factory returning a ``Member``; ``Teacher``
combines members and labels batches of face crops.
"""
from agedistill_core.teacher.members import MEMBERS, Member, make_member
from agedistill_core.teacher.ensemble import AGE_AXIS, Teacher, TeacherOutput, build_teacher, rebin

__all__ = ["AGE_AXIS", "MEMBERS", "Member", "Teacher", "TeacherOutput", "build_teacher", "make_member", "rebin"]
