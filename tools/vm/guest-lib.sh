# Shell functions of the guest's /init and its test scripts, sourced from
# /usr/lib/vm/lib.sh. Under TCG every fork and exec of the debug kernel
# costs 80 to 200 ms, so these use the shell's builtins only.

# Whether a process other than init and this shell is alive: not a
# kernel thread (kthreadd, pid 2, and its children) and not a zombie.
# Call it in the shell itself, not a subshell, whose own pid would count.
user_tasks_left() {
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		case $pid in 1 | 2 | $$) continue ;; esac
		read -r stat < "$p/stat" 2>/dev/null || continue
		set -- ${stat##*) }
		[ "$1" = Z ] || [ "$2" = 2 ] || return 0
	done
	return 1
}

# kill_user_tasks: kills every process but init and this shell, and waits
# for them to be gone (2 s at most: one stuck in a driver stays).
kill_user_tasks() {
	kill -9 -1 2>/dev/null
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		user_tasks_left || return 0
		sleep 0.1
	done
	return 1
}

# cmdline_params MODULE: sets params to MODULE's parameters on the kernel
# command line, given as for a built-in module ("MODULE.p=v" -> "p=v"),
# separated by spaces.
cmdline_params() {
	params=""
	read -r cmdline < /proc/cmdline
	for arg in $cmdline; do
		case $arg in "$1".*) params="$params ${arg#"$1".}" ;; esac
	done
	params=${params# }
}
