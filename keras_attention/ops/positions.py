"""Position math shared by the position layers: T5 relative position buckets."""

import math

from keras import ops


def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """Buckets of int32 relative positions `key - query`, as mesh-tensorflow computes them.

    The float32 operations are those of the original (`log(n / exact) /
    log(max_distance / exact) * (buckets - exact)`, truncated), so the buckets
    agree with checkpoints trained with it.

    Args:
        relative_position: int32 tensor, `key position - query position`.
        bidirectional: bool, separate buckets for keys after the query
            (encoder); `False` puts every key after the query in bucket 0.
        num_buckets: int, the number of buckets.
        max_distance: int, distances from here on share the last bucket.

    Returns:
        int32 tensor of buckets in `[0, num_buckets)`, shaped like `relative_position`.

    Example:

    >>> import numpy as np
    >>> relative = np.array([-1, -16, -200, 3], "int32")  # key - query
    >>> np.asarray(relative_position_bucket(relative, False, 32, 128)).tolist()
    [1, 16, 31, 0]
    """
    distance = -relative_position  # > 0 for keys before the query
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket = ops.cast(ops.less(distance, 0), "int32") * num_buckets  # keys after the query
        distance = ops.abs(distance)
    else:
        distance = ops.maximum(distance, 0)
    exact = num_buckets // 2
    # Distances below `exact` are their own bucket; max() keeps log() away from log(0).
    scaled = ops.cast(ops.maximum(distance, exact), "float32") / float(exact)
    logarithmic = ops.log(scaled) / math.log(max_distance / exact) * float(num_buckets - exact)
    logarithmic = exact + ops.cast(ops.floor(logarithmic), "int32")
    logarithmic = ops.minimum(logarithmic, num_buckets - 1)
    return bucket + ops.where(ops.less(distance, exact), distance, logarithmic)
