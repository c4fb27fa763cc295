"""ARM SMMU (v2 and v3). Only its log lines are read so far (:mod:`.log`); no state
reader from memory yet."""
