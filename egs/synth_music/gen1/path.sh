# Environment for the recipe: the project's virtualenv (made by `make setup`) if present.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "${_root}/.venv/bin/activate" ]; then
  . "${_root}/.venv/bin/activate"
fi
export PYTHONPATH="${_root}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONIOENCODING=UTF-8
