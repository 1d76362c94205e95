# bash completion for ktproxy. The commands and flags come from the binary
# itself (`ktproxy --list-flags`, the same parsers that read the command
# line), so this file never lists a flag and cannot fall behind.

_ktproxy() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion -s || return
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
        prev="${COMP_WORDS[COMP_CWORD-1]}"
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    # After "--" of `ktproxy run`: the command line of CMD.
    local i cmd=ktproxy
    for ((i = 1; i < cword; i++)); do
        if [ "${words[i]}" = "--" ]; then
            COMPREPLY=($(compgen -c -- "$cur"))
            return
        fi
    done
    case "${words[1]:-}" in
        run | status | cleanup | doctor | ctl) cmd="${words[1]}" ;;
    esac
    # ctl's words: what to switch, then on or off.
    if [ "$cmd" = ctl ] && [[ "$cur" != -* ]] && [ "$prev" != --control ]; then
        case "$prev" in
            ctl) COMPREPLY=($(compgen -W "dry-run" -- "$cur")); return ;;
            dry-run) COMPREPLY=($(compgen -W "on off" -- "$cur")); return ;;
        esac
    fi

    local list
    list="$("${words[0]}" --list-flags 2>/dev/null)" || return

    case "$prev" in
        --config) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --control) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --cgroup) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --gateway-iface) COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur")); return ;;
        --relay) COMPREPLY=($(compgen -W "splice buffers" -- "$cur")); return ;;
        --log-level) COMPREPLY=($(compgen -W "trace debug info warn error" -- "$cur")); return ;;
        --log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        --user) COMPREPLY=($(compgen -u -- "$cur")); return ;;
    esac
    # Any other flag that takes a value ("--flag=" in the list): free text.
    if [[ "$prev" == --* ]] && grep -qx -- "$cmd $prev=" <<<"$list"; then
        return
    fi

    local flags
    flags="$(sed -n "s/^$cmd \(--[a-z0-9-]*\)=\{0,1\}\$/\1/p" <<<"$list")"
    if [ "$cmd" = ktproxy ] && [ "$cword" -eq 1 ] && [[ "$cur" != -* ]]; then
        COMPREPLY=($(compgen -W "run status cleanup doctor ctl" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
}
complete -F _ktproxy ktproxy
