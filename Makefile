# The test suite runs once per supported Keras backend, each in its own process
# (Keras picks its backend at import time).
PYTHON ?= python
# Tests run in parallel worker processes, except those that start Jupyter
# kernels: they form one xdist group, run by one worker one after another
# (kernels started at once race for ports, jupyter_client#487).
PYTEST_ARGS ?= -q -n auto --maxprocesses 4 --dist loadgroup --durations=25

.PHONY: test test-tensorflow test-jax bench

test: test-tensorflow test-jax

test-tensorflow:
	KERAS_BACKEND=tensorflow $(PYTHON) -m pytest $(PYTEST_ARGS) tests --doctest-modules robustlab _robustlab_command.py

# The course's notebooks run on TensorFlow (its default backend): their tests
# run once, with the TensorFlow suite.
test-jax:
	KERAS_BACKEND=jax $(PYTHON) -m pytest $(PYTEST_ARGS) tests --ignore=tests/course --doctest-modules robustlab _robustlab_command.py --ignore=robustlab/course

bench:
	$(PYTHON) benchmarks/run_all.py

# Regenerate the students' notebooks (lessons/) from the instructor's
# (solutions/) with nbgrader; never edit lessons/ by hand.
LESSONS = $(notdir $(patsubst %/,%,$(dir $(wildcard solutions/*/*.ipynb))))

.PHONY: lessons
lessons:
	for lesson in $(LESSONS); do KERAS_BACKEND=tensorflow $(PYTHON) -m nbgrader generate_assignment $$lesson --force || exit 1; done
