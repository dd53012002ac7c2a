"""glrast's logging level, with nvdiffrast's numbering (0 info, 1 warning, 2 error, 3 fatal)."""

import logging

logger = logging.getLogger("glrast")
_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
logger.setLevel(logging.WARNING)


def get_log_level() -> int:
    return _LEVELS.index(logger.getEffectiveLevel()) if logger.getEffectiveLevel() in _LEVELS else 1


def set_log_level(level: int) -> None:
    if level not in range(4):
        raise ValueError(f"set_log_level: level must be 0 (info), 1 (warning), 2 (error) or 3 (fatal), got {level!r}")
    logger.setLevel(_LEVELS[level])
