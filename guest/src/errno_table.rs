//! The shared errno and signal table (`daxtest_proto::errno`, written down from the kernel's
//! headers) against this platform's libc: the agent names every number the kernel returns
//! through that table, so a wrong number there would misname what a step observed.

use daxtest_proto::errno::{ALIASES, ERRNOS, SIGNALS};

/// (name, libc's constant) for each name, so that the names are written once.
macro_rules! libc_consts {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

const LIBC_ERRNOS: &[(&str, i32)] = libc_consts!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    ENOEXEC,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    ENOTBLK,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    ETXTBSY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    EPIPE,
    EDOM,
    ERANGE,
    EDEADLK,
    ENAMETOOLONG,
    ENOLCK,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENOMSG,
    EIDRM,
    ECHRNG,
    EL2NSYNC,
    EL3HLT,
    EL3RST,
    ELNRNG,
    EUNATCH,
    ENOCSI,
    EL2HLT,
    EBADE,
    EBADR,
    EXFULL,
    ENOANO,
    EBADRQC,
    EBADSLT,
    EBFONT,
    ENOSTR,
    ENODATA,
    ETIME,
    ENOSR,
    ENONET,
    ENOPKG,
    EREMOTE,
    ENOLINK,
    EADV,
    ESRMNT,
    ECOMM,
    EPROTO,
    EMULTIHOP,
    EDOTDOT,
    EBADMSG,
    EOVERFLOW,
    ENOTUNIQ,
    EBADFD,
    EREMCHG,
    ELIBACC,
    ELIBBAD,
    ELIBSCN,
    ELIBMAX,
    ELIBEXEC,
    EILSEQ,
    ERESTART,
    ESTRPIPE,
    EUSERS,
    ENOTSOCK,
    EDESTADDRREQ,
    EMSGSIZE,
    EPROTOTYPE,
    ENOPROTOOPT,
    EPROTONOSUPPORT,
    ESOCKTNOSUPPORT,
    EOPNOTSUPP,
    EPFNOSUPPORT,
    EAFNOSUPPORT,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENETDOWN,
    ENETUNREACH,
    ENETRESET,
    ECONNABORTED,
    ECONNRESET,
    ENOBUFS,
    EISCONN,
    ENOTCONN,
    ESHUTDOWN,
    ETOOMANYREFS,
    ETIMEDOUT,
    ECONNREFUSED,
    EHOSTDOWN,
    EHOSTUNREACH,
    EALREADY,
    EINPROGRESS,
    ESTALE,
    EUCLEAN,
    ENOTNAM,
    ENAVAIL,
    EISNAM,
    EREMOTEIO,
    EDQUOT,
    ENOMEDIUM,
    EMEDIUMTYPE,
    ECANCELED,
    ENOKEY,
    EKEYEXPIRED,
    EKEYREVOKED,
    EKEYREJECTED,
    EOWNERDEAD,
    ENOTRECOVERABLE,
    ERFKILL,
    EHWPOISON,
);

/// The second names libc has (EFSCORRUPTED and EFSBADCRC are the kernel's own, not libc's).
const LIBC_ALIASES: &[(&str, i32)] = libc_consts!(EWOULDBLOCK, EDEADLOCK, ENOTSUP);

const LIBC_SIGNALS: &[(&str, i32)] = libc_consts!(
    SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1, SIGSEGV,
    SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN,
    SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS,
);

/// Every entry's number is libc's, and every libc name listed here has its entry.
#[test]
fn every_number_is_libcs() {
    for (table, libc) in [(ERRNOS, LIBC_ERRNOS), (SIGNALS, LIBC_SIGNALS)] {
        assert_eq!(table, libc);
    }
    for (alias, number) in LIBC_ALIASES {
        let reported = ALIASES.iter().find(|(a, _)| a == alias).map(|(_, r)| r);
        let reported = reported.unwrap_or_else(|| panic!("{alias} is not in ALIASES"));
        assert_eq!(daxtest_proto::errno::errno_number(reported), Some(*number), "{alias}");
    }
}

/// The agent names every errno and signal of the table by the table (sys.rs's tests cover the
/// number it has no name for), and a signal outside it by its number.
#[test]
fn the_agent_reports_the_tables_names() {
    use crate::exec::sys::{errno_name, signal_name};
    for (name, number) in ERRNOS {
        assert_eq!(errno_name(*number), *name);
    }
    for (name, number) in SIGNALS {
        assert_eq!(signal_name(*number), *name);
    }
    let realtime = libc::SIGRTMIN() + 1;
    assert_eq!(signal_name(realtime), format!("SIG{realtime}"));
}
