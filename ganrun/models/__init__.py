"""Architecture families, one file each; configs/model/*.yaml name them by ``_target_``."""
