"""Maintenance jobs: the interface (:mod:`.base`), the runner (:mod:`.runner`),
run records (:mod:`.records`), the single-flight lock (:mod:`.lock`) and the
catalog of jobs (:mod:`.catalog`)."""
