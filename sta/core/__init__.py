"""STA itself, independent of any model class: where to prune, how to score and select, attention kernels."""
