"""Dataset sources: one converter per raw dataset, plus the procedural shapes world."""
