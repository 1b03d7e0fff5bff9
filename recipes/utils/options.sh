#!/usr/bin/env bash
# Option handling for recipe scripts: each option is declared once, with its default and help;
# --help is generated from the declarations, so it cannot drift from the defaults.
#
# Usage (inside a script):
#   . "$(dirname "$0")/utils/options.sh"
#   opt stage 1 "first stage to run"
#   opt asr_config "" "training config (YAML)" required
#   parse_opts "$@"
#   require_opts
#
# Accepts --name value and --name=value; dashes and underscores in names are equivalent.

_opt_names=()
_opt_helps=()
_opt_required=()
_opt_usage=""

# opt NAME DEFAULT HELP [required]
opt() {
  local name=$1 default=$2 help=$3 req=${4:-}
  _opt_names+=("$name")
  _opt_helps+=("$help")
  [ "$req" = required ] && _opt_required+=("$name")
  # A value exported before the call (e.g. by a wrapper) wins over the default.
  if [ -z "${!name+x}" ]; then printf -v "$name" '%s' "$default"; fi
}

# usage_text TEXT: the first lines of --help
usage_text() { _opt_usage=$1; }

print_help() {
  [ -n "$_opt_usage" ] && printf '%s\n\n' "$_opt_usage"
  echo "Options (default in brackets):"
  local i
  for i in "${!_opt_names[@]}"; do
    local n=${_opt_names[$i]}
    printf '  --%-24s %s [%s]\n' "$n" "${_opt_helps[$i]}" "${!n}"
  done
}

_is_opt() {
  local n
  for n in "${_opt_names[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

parse_opts() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --help|-h) print_help; exit 0 ;;
      --*=*) local key=${1%%=*} val=${1#*=}; shift ;;
      --*)
        local key=$1
        if [ $# -lt 2 ]; then echo "$0: option $key needs a value" >&2; exit 2; fi
        local val=$2; shift 2 ;;
      *) echo "$0: unexpected argument '$1' (options start with --; see --help)" >&2; exit 2 ;;
    esac
    key=${key#--}; key=${key//-/_}
    if ! _is_opt "$key"; then
      echo "$0: unknown option --$key. Valid options: ${_opt_names[*]/#/--}" >&2
      exit 2
    fi
    printf -v "$key" '%s' "$val"
  done
}

require_opts() {
  local n
  for n in "${_opt_required[@]}"; do
    if [ -z "${!n}" ]; then echo "$0: --$n is required (see --help)" >&2; exit 2; fi
  done
}

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
