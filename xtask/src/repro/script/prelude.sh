# ---- helpers (the same in every generated reproducer) -------------------------------------------
set -u
# A write to the session's fifo after xfs_io died must fail, not kill this script.
trap '' PIPE
W=$(mktemp -d /tmp/daxrepro.XXXXXX)
S_PID=
STEP=0
SWAPPED=
FROZEN=0
MOUNTED=0

say() { printf '%s\n' "$*"; }

# The errno name for the first strerror(3) text found in file $1 (glibc, C locale); longer
# messages first where one contains another.
errno_in() {
	while IFS='|' read -r name text; do
		if grep -qF -- "$text" "$1"; then
			printf '%s' "$name"
			return 0
		fi
	done <<'ERRNOS'
ENFILE|Too many open files in system
EMFILE|Too many open files
ENXIO|No such device or address
ENODEV|No such device
EPERM|Operation not permitted
ENOENT|No such file or directory
EINTR|Interrupted system call
EIO|Input/output error
E2BIG|Argument list too long
EBADF|Bad file descriptor
EAGAIN|Resource temporarily unavailable
ENOMEM|Cannot allocate memory
EACCES|Permission denied
EFAULT|Bad address
EBUSY|Device or resource busy
EEXIST|File exists
EXDEV|Invalid cross-device link
ENOTDIR|Not a directory
EISDIR|Is a directory
EINVAL|Invalid argument
ENOTTY|Inappropriate ioctl for device
ETXTBSY|Text file busy
EFBIG|File too large
ENOSPC|No space left on device
ESPIPE|Illegal seek
EROFS|Read-only file system
EMLINK|Too many links
ERANGE|Numerical result out of range
ENOSYS|Function not implemented
ENOTEMPTY|Directory not empty
ENODATA|No data available
EOVERFLOW|Value too large for defined data type
EOPNOTSUPP|Operation not supported
EDQUOT|Disk quota exceeded
EUCLEAN|Structure needs cleaning
ENOKEY|Required key not available
ESTALE|Stale file handle
ERRNOS
	return 1
}

signal_name() {
	case $1 in
	7) echo SIGBUS ;;
	11) echo SIGSEGV ;;
	*) echo "signal $1" ;;
	esac
}

# GOT from exit status $1 and output file $2: "success", "error ENAME", "killed by SIGBUS", or
# "exit N: output" for a failure without an errno text.
observe() {
	if e=$(errno_in "$2"); then
		GOT="error $e"
	elif [ "$1" -gt 128 ]; then
		GOT="killed by $(signal_name $(($1 - 128)))"
	elif [ "$1" -ne 0 ]; then
		GOT="exit $1: $(head -c 300 "$2" | tr '\n' ' ')"
	else
		GOT=success
	fi
}

# Runs a command, output in $W/o; sets RC and GOT.
run() {
	say "  \$ $*"
	"$@" >"$W/o" 2>&1
	RC=$?
	observe "$RC" "$W/o"
}

# step N LINE OP: announces a step.
step() {
	STEP=$1
	STEP_DESC="step $1 (line $2, $3)"
	say "$STEP_DESC: expect $EXPECT"
}

# verdict ok|bad: the end of a step; a mismatch ends the script, as the agent stops there.
verdict() {
	say "  got: $GOT"
	if [ "$1" != ok ]; then
		finish_fail "$STEP_DESC: expected $EXPECT, got $GOT"
	fi
}

expect_success() { case $GOT in "exit 0:"*) verdict ok ;; error* | killed* | exit*) verdict bad ;; *) verdict ok ;; esac; }
expect_errno() { [ "$GOT" = "error $1" ] && verdict ok || verdict bad; }
expect_signal() { [ "$GOT" = "killed by $1" ] && verdict ok || verdict bad; }

# Byte runs of a dump, as daxtest prints them ('a' x4096 at 0), and whether every byte is $2
# (hex). $1: od (od -A d -t x1, "*" for repeated lines) or dump (xfs_io's "-v" hex dump with
# offsets relative to $3).
runs_of() {
	awk -v fmt="$1" -v want="$2" -v base="${3:-0}" '
	# busybox awk reads a leading 0 as octal: od -A d pads offsets with zeros.
	function dec(s) { sub(/^0+/, "", s); return s == "" ? 0 : s + 0 }
	function hexval(h,   i, v) { v = 0; h = tolower(h); for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
	function show(b) { if (b == "00") return "\\0"; v = hexval(b); if (v >= 32 && v < 127) return sprintf("%c%c%c", 39, v, 39); return "0x" b }
	function add(b, n) {
		if (n <= 0) return
		count += n
		if (b != want) bad = 1
		if (nr > 0 && rb[nr] == b) { rl[nr] += n; return }
		nr++; rb[nr] = b; rl[nr] = n; ro[nr] = pos
	}
	function addline(   i) { for (i = 1; i <= nl; i++) { add(lb[i], 1); pos++ } }
	fmt == "od" && $1 == "*" { star = 1; next }
	fmt == "od" && $1 ~ /^[0-9]+$/ {
		off = dec($1)
		if (started && star && nl > 0) { while (pos + nl <= off) addline(); }
		star = 0
		if (!started) { pos = off; started = 1 }
		nl = 0; for (i = 2; i <= NF; i++) lb[++nl] = $i
		if (NF > 1) addline()
		next
	}
	fmt == "dump" && $1 ~ /^[0-9a-f]+:$/ {
		if (!started) { pos = base + hexval(substr($1, 1, length($1) - 1)); started = 1 }
		for (i = 2; i < NF; i++) { b = $i; add(substr(b, length(b) - 1), 1); pos++ }
	}
	END {
		s = ""; for (i = 1; i <= nr && i <= 16; i++) s = s (i > 1 ? ", " : "") show(rb[i]) " x" rl[i] " at " ro[i]
		if (nr > 16) s = s ", ..."
		printf "%s %d bytes [%s]\n", (bad ? "BAD" : "OK"), count, s
	}' 
}

# data_result "OK|BAD N [runs]" ASKED: GOT becomes "bytes [runs]", DATA_OK whether all ASKED
# bytes came back and every one was the wanted one (as the agent: a short read fails).
data_result() {
	got=$(echo "$1" | awk '{ print $2 }')
	case $1 in
	OK*) [ "$got" = "$2" ] && DATA_OK=1 || DATA_OK=0 ;;
	*) DATA_OK=0 ;;
	esac
	GOT="bytes [${1#*\[}"
	[ "$got" = "$2" ] || GOT="$GOT (asked $2, got $got)"
}

expect_content() {
	case $GOT in
	bytes*) [ "$DATA_OK" = 1 ] && verdict ok || verdict bad ;;
	*) verdict bad ;;
	esac
}

expect_got() { [ "$GOT" = "$1" ] && verdict ok || verdict bad; }

expect_exit() { case $GOT in "exit $1:"*) verdict ok ;; *) verdict bad ;; esac; }

# expect_extents NAME same|changed: the extent lines against those saved as NAME.
expect_extents() {
	case $GOT in extents*) ;; *) verdict bad; return ;; esac
	if [ ! -f "$W/fiemap.$1" ]; then
		GOT="error DAXTEST-ERROR: no saved extent map $1"
		verdict bad
	elif cmp -s "$W/ext" "$W/fiemap.$1"; then
		[ "$2" = same ] && verdict ok || verdict bad
	else
		[ "$2" = changed ] && verdict ok || verdict bad
	fi
}

# expect_shared all|none|some|hole: FIEMAP_EXTENT_SHARED (0x2000) on the extent lines; a range
# without extents is a hole, which only `hole` accepts.
expect_shared() {
	case $GOT in extents*) ;; *) verdict bad; return ;; esac
	total=0
	shared=0
	for f in $(awk '{ print $NF }' "$W/ext"); do
		total=$((total + 1))
		[ $((f & 0x2000)) -ne 0 ] && shared=$((shared + 1))
	done
	case $1 in
	hole) [ $total -eq 0 ] ;;
	all) [ $total -gt 0 ] && [ $shared -eq $total ] ;;
	none) [ $total -gt 0 ] && [ $shared -eq 0 ] ;;
	some) [ $shared -gt 0 ] && [ $shared -lt $total ] ;;
	esac && verdict ok || verdict bad
}

# fiemap ARGS PATH: xfs_io's fiemap -v; the extent lines (holes left out: FIEMAP reports none)
# go to $W/ext, GOT lists them.
fiemap() {
	run xfs_io -r -c "fiemap -v $1" "$2"
	[ "$GOT" = success ] || return
	awk '$1 ~ /^[0-9]+:$/ && $3 != "hole" { $1 = ""; sub(/^ /, ""); print }' "$W/o" >"$W/ext"
	GOT="extents [$(awk 'NR > 1 { printf ", " } { printf "%s", $0 }' "$W/ext")]"
}

# statx PATH: GOT "STATX_ATTR_DAX on|off".
statx_dax() {
	run xfs_io -r -c "statx -r" "$1"
	[ "$GOT" = success ] || return
	attr=$(awk '$1 == "stat.attributes" { print $3 }' "$W/o")
	mask=$(awk '$1 == "stat.attributes_mask" { print $3 }' "$W/o")
	if [ -z "$mask" ] || [ $((mask & 0x200000)) -eq 0 ]; then
		GOT="error DAXTEST-ERROR: the filesystem does not report STATX_ATTR_DAX"
	elif [ $((attr & 0x200000)) -ne 0 ]; then
		GOT="STATX_ATTR_DAX on"
	else
		GOT="STATX_ATTR_DAX off"
	fi
}

# get_flag PATH: GOT "FS_XFLAG_DAX on|off", from xfs_io's `lsattr -v` ("[dax, ...] PATH"; its
# `stat` shows fsxattr.xflags on XFS only).
get_flag() {
	run xfs_io -r -c "lsattr -v" "$1"
	[ "$GOT" = success ] || return
	flags=$(sed -n 's/^\[\(.*\)\] .*/,\1,/p' "$W/o" | tr -d ' ')
	case $flags in
	"") GOT="exit 255: xfs_io lsattr -v printed no flag list: $(head -c 200 "$W/o")" ;;
	*,dax,*) GOT="FS_XFLAG_DAX on" ;;
	*) GOT="FS_XFLAG_DAX off" ;;
	esac
}

# read_data OFFSET LEN PATH: read(2) with od; GOT the byte runs.
read_data() {
	run od -A d -t x1 -j "$1" -N "$2" "$3"
	[ "$GOT" = success ] || return
	data_result "$(runs_of od "$WANT_HEX" <"$W/o")" "$2"
}

# The kernel log of the case: everything after our start marker.
klog() { dmesg | sed -n "/daxtest-repro: start $CASE_TAG/,\$p" | sed 1d; }

# ---- the xfs_io session: one long-lived xfs_io holding every open handle and mapping ----------
# It reads commands from a fifo. Its stdout is fully buffered (not a terminal), so a load's
# dump is pushed out by two `help` listings (over 8 KiB) after it; stderr is unbuffered, so
# each batch of commands ends with an `open` of a missing file whose error line marks, in the
# stderr log, that the batch is done. SIGBUS kills xfs_io (it does not catch it).
s_start() {
	S_N=0
	S_DUMPED=0
	rm -f "$W/s.in" "$W/s.out" "$W/s.err"
	mkfifo "$W/s.in"
	xfs_io <"$W/s.in" >"$W/s.out" 2>"$W/s.err" &
	S_PID=$!
	exec 4>"$W/s.in"
	s_sync
}

# Waits until the session has run everything sent so far (or died); RC 0 alive, else its
# status (128 + signal); $W/seg holds the stderr lines of the last batch.
s_sync() {
	S_N=$((S_N + 1))
	printf 'open /nonexistent-daxtest-sync/%s\n' "$S_N" >&4 2>/dev/null
	while ! grep -q "nonexistent-daxtest-sync/$S_N:" "$W/s.err" 2>/dev/null; do
		if ! kill -0 "$S_PID" 2>/dev/null; then
			wait "$S_PID"
			RC=$?
			S_PID=
			exec 4>&-
			awk -v a="nonexistent-daxtest-sync/$((S_N - 1)):" 'f; index($0, a) { f = 1 }' "$W/s.err" >"$W/seg"
			return
		fi
		sleep 0.02
	done
	RC=0
	awk -v a="nonexistent-daxtest-sync/$((S_N - 1)):" -v b="nonexistent-daxtest-sync/$S_N:" \
		'index($0, b) { exit } f; index($0, a) { f = 1 }' "$W/s.err" >"$W/seg"
}

# s_do CMD...: sends xfs_io commands to the session, waits, sets RC and GOT.
s_do() {
	if [ -z "$S_PID" ]; then
		GOT="exit 255: the xfs_io session is gone"
		return
	fi
	for c in "$@"; do
		say "  xfs_io> $c"
		printf '%s\n' "$c" >&4
	done
	s_sync
	observe "$RC" "$W/seg"
}

# s_load OFFSET LEN: mread -v through the current mapping (OFFSET is a file offset, as xfs_io
# takes it; the dump counts from the mapping's start, as the agent reports loads).
s_load() {
	s_do "mread -v $1 $2" help help
	[ "$GOT" = success ] || return
	lines=$((($2 + 15) / 16))
	grep -E '^[0-9a-f]{8,}:  ' "$W/s.out" | sed -n "$((S_DUMPED + 1)),$((S_DUMPED + lines))p" >"$W/dump"
	S_DUMPED=$((S_DUMPED + lines))
	if [ "$(wc -l <"$W/dump")" -ne "$lines" ]; then
		GOT="exit 255: only $(wc -l <"$W/dump") of $lines lines of xfs_io's dump came out"
		return
	fi
	data_result "$(runs_of dump "$WANT_HEX" <"$W/dump")" "$2"
}

s_stop() {
	if [ -n "$S_PID" ]; then
		printf 'quit\n' >&4 2>/dev/null
		exec 4>&-
		wait "$S_PID" 2>/dev/null
		S_PID=
	fi
}

# Respawns the session after an expected SIGBUS killed it; the generated code then opens and
# maps again what the agent still held (the agent loads in a forked child, so its mapping
# survives; xfs_io's does not).
s_respawn() {
	say "  NOTE: xfs_io died of the signal, as expected; a new xfs_io maps the files again (in"
	say "        daxtest only that mapping's process dies, and the case maps it again itself)"
	s_start
}

teardown() {
	s_stop
	[ "$FROZEN" = 1 ] && xfs_io -x -r -c thaw "$MNT" >/dev/null 2>&1
	for f in $SWAPPED; do swapoff "$f" 2>/dev/null; done
	TEARDOWN=
	if [ "$MOUNTED" = 1 ]; then
		i=0
		until umount "$MNT" 2>"$W/umount"; do
			i=$((i + 1))
			if [ $i -ge 20 ]; then
				TEARDOWN="umount $MNT: $(cat "$W/umount")"
				umount -l "$MNT" 2>/dev/null
				break
			fi
			sleep 0.05
		done
		MOUNTED=0
		# The case asks for the filesystem to be checked once unmounted, as daxtest does.
		if [ -z "$TEARDOWN" ] && [ "$FSCK" = 1 ]; then
			case $FS in
			xfs) xfs_repair -n "$DEV" >"$W/fsck" 2>&1 ;;
			*) e2fsck -f -n "$DEV" >"$W/fsck" 2>&1 ;;
			esac || TEARDOWN="the filesystem check found problems: $(grep -v '^Phase ' "$W/fsck" | head -5 | tr '\n' ' ')"
		fi
	fi
}

finish_fail() {
	teardown
	say "FAIL: $*"
	rm -rf "$W"
	exit 1
}

finish_error() {
	teardown
	say "ERROR: $*"
	rm -rf "$W"
	exit 3
}

# The case's verdict beyond its steps, as daxtest judges it: kernel-log lines matching the
# failure patterns (unless benign), expected patterns that never matched, a change of the taint,
# a failed teardown. Prints the problems; returns 1 if there are any.
log_problems() {
	klog >"$W/klog"
	n=0
	: >"$W/bad"
	if [ -s "$W/failure.re" ]; then
		grep -E -f "$W/failure.re" "$W/klog" >"$W/bad0"
		if [ -s "$W/benign.re" ]; then grep -v -E -f "$W/benign.re" "$W/bad0" >"$W/bad"; else cp "$W/bad0" "$W/bad"; fi
	fi
	if [ -s "$W/bad" ]; then
		say "kernel log: lines that fail the case:"
		sed 's/^/  /' "$W/bad"
		n=1
	fi
	if [ -s "$W/expected.re" ]; then
		while IFS= read -r re; do
			if ! grep -qE -- "$re" "$W/klog"; then
				say "kernel log: nothing matched the expected pattern \"$re\""
				n=1
			fi
		done <"$W/expected.re"
	fi
	TAINT_AFTER=$(cat /proc/sys/kernel/tainted)
	if [ "$TAINT_AFTER" != "$TAINT_BEFORE" ]; then
		say "the kernel taint changed from $TAINT_BEFORE to $TAINT_AFTER"
		n=1
	fi
	if [ -n "$TEARDOWN" ]; then
		say "teardown: $TEARDOWN"
		n=1
	fi
	return $n
}

# The end after the last step.
finish() {
	teardown
	if log_problems; then
		say "PASS: every step met its expectation and the kernel log is clean"
		rm -rf "$W"
		exit 0
	fi
	say "FAIL: see the kernel log problems above"
	rm -rf "$W"
	exit 1
}

# A power_cut step: the power goes after step $1, by hand. What reached the NVDIMM stays in
# qemu.sh's backing file; the page cache and uncommitted metadata are lost. Part $2 of the case
# runs in the VM booted again on that file.
power_cut() {
	say "POWER CUT after step $1: now kill QEMU with no warning (no sync, no unmount), e.g."
	say "  kill -9 <pid of qemu.sh's qemu-system-x86_64>,"
	say "boot it again on the same backing file (VMDIR=<the VMDIR qemu.sh printed> ./qemu.sh)"
	say "and run the rest there: PART=$2 (with the same DEV and MNT) sh -s < reproduce.sh"
	rm -rf "$W"
	exit 4
}

# The power_cut step in the VM booted after the cut, as daxtest's agent does it: mount (the
# kernel replays the log), unmount, check (xfs_repair -n refuses a dirty log: so after the
# recovery mount), mount again. The kernel log is judged from here on.
recover() {
	echo "daxtest-repro: start $CASE_TAG" >/dev/kmsg
	TAINT_BEFORE=$(cat /proc/sys/kernel/tainted)
	mkdir -p "$MNT"
	run mount -t "$FS" -o "$MOUNT_OPTS" "$DEV" "$MNT"
	[ "$GOT" = success ] || return 0
	run umount "$MNT"
	[ "$GOT" = success ] || return 0
	case $FS in
	xfs) xfs_repair -n "$DEV" >"$W/fsck" 2>&1 ;;
	*) e2fsck -f -n "$DEV" >"$W/fsck" 2>&1 ;;
	esac || {
		GOT="error after the cut: the filesystem check found problems: $(grep -v '^Phase ' "$W/fsck" | head -5 | tr '\n' ' ')"
		return 0
	}
	run mount -t "$FS" -o "$MOUNT_OPTS" "$DEV" "$MNT"
	[ "$GOT" = success ] && MOUNTED=1
	return 0
}

# Formats and mounts the device as the case does, then checks that DAX is in the state the
# mount asks for, as the daxtest agent does before any step.
setup() {
	echo "daxtest-repro: start $CASE_TAG" >/dev/kmsg
	TAINT_BEFORE=$(cat /proc/sys/kernel/tainted)
	say "set-up: mkfs.$FS $MKFS_ARGS $DEV; mount -t $FS -o $MOUNT_OPTS $DEV $MNT"
	# shellcheck disable=SC2086 # MKFS_ARGS is a list of words
	"mkfs.$FS" $MKFS_FORCE -q $MKFS_ARGS "$DEV" >"$W/o" 2>&1 || finish_error "mkfs.$FS: $(cat "$W/o")"
	mkdir -p "$MNT"
	mount -t "$FS" -o "$MOUNT_OPTS" "$DEV" "$MNT" 2>"$W/o" || finish_error "mount: $(cat "$W/o")"
	MOUNTED=1
	opts=$(awk -v m="$MNT" '$2 == m { o = $4 } END { print o }' /proc/mounts)
	say "  mounted with $opts"
	# A mount without the DAX mode its options promise fails the case, as daxtest judges it: the
	# boot proved the device does DAX, so it is the filesystem's failure.
	probe=$MNT/.daxtest-probe
	case ,$MOUNT_OPTS, in
	*,dax,* | *,dax=always,*)
		touch "$probe"
		attr=$(xfs_io -r -c "statx -r" "$probe" | awk '$1 == "stat.attributes" { print $3 }')
		[ $((attr & 0x200000)) -ne 0 ] ||
			finish_fail "DAX state after mount: DAX is off on a dax=always mount (options $opts): is $DEV an fsdax namespace?"
		;;
	*,dax=never,*)
		case ,$opts, in *,dax=never,*) ;; *) finish_fail "DAX state after mount: the mount does not show dax=never: $opts" ;; esac
		;;
	*)
		touch "$probe"
		xfs_io -r -c "chattr +x" "$probe" >/dev/null 2>&1
		attr=$(xfs_io -r -c "statx -r" "$probe" | awk '$1 == "stat.attributes" { print $3 }')
		[ $((attr & 0x200000)) -ne 0 ] ||
			finish_fail "DAX state after mount: DAX does not work on this dax=inode mount (options $opts)"
		;;
	esac
	rm -f "$probe"
}
# ---- end of helpers ------------------------------------------------------------------------------
