"""The size of the session's shapes world (the `shapes_world` fixture), which tests count against."""

SHAPES_TRAIN = 100
SHAPES_VAL = 30
SHAPES_MAXCOUNT = 20  # so train has 5 shards and val 2: enough to split over 2 workers
