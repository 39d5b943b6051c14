# Shared by appliance/build.sh and appliance/boot-test.sh (sourced, not run).

# parse_settings SCRIPT "opt=VAR ..." "VAR ..." ARGS...
# Sets VAR from `--opt value`, `--opt=value` or `VAR=value` arguments (sudo keeps arguments,
# not the caller's environment); `--help` prints SCRIPT's header comment. Anything else is an
# error (exit 2), so a typo never builds something other than what was asked.
parse_settings() {
  local script=$1 opts=" $2 " vars=" $3 "
  shift 3
  local arg name value var
  while [ $# -gt 0 ]; do
    arg=$1; shift
    case $arg in
      -h|--help)
        sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$script"; exit 0 ;;
      --*=*) name=${arg%%=*}; name=${name#--}; value=${arg#*=} ;;
      --*)
        name=${arg#--}
        [ $# -gt 0 ] || { echo "$arg needs a value (see --help)" >&2; exit 2; }
        value=$1; shift ;;
      [A-Z]*=*)
        var=${arg%%=*}
        case $vars in *" $var "*) ;; *) echo "unknown setting $var (see --help)" >&2; exit 2 ;; esac
        printf -v "$var" '%s' "${arg#*=}"; continue ;;
      *) echo "unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
    case $opts in
      *" $name="*) var=${opts#*" $name="}; var=${var%% *} ;;
      *) echo "unknown option --$name (see --help)" >&2; exit 2 ;;
    esac
    printf -v "$var" '%s' "$value"
  done
}

# apt_get ARGS...: apt-get that waits (up to APT_LOCK_WAIT seconds, 900) while another apt or
# dpkg holds its locks, instead of failing at once. DPkg::Lock::Timeout covers dpkg's lock;
# `apt-get update`'s lists lock has no such option in apt 2.6, hence the retry loop.
apt_get() {
  local out waited=0
  while :; do
    if out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1); then
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    if grep -qE "Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock" <<<"$out" \
       && [ "$waited" -lt "${APT_LOCK_WAIT:-900}" ]; then
      [ "$waited" -gt 0 ] || echo "waiting for the apt/dpkg lock ($(grep -oE 'held by process [0-9]+( \([^)]*\))?' <<<"$out" | head -n1))" >&2
      sleep 5; waited=$((waited + 5))
      continue
    fi
    printf '%s\n' "$out" >&2
    return 1
  done
}
