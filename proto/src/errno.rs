//! Errno and signal names with their Linux x86_64 numbers: one table for the scenario validator
//! (which names a scenario may expect), the agent (which name it reports for a number) and the
//! reports. Numbers from include/uapi/asm-generic/errno-base.h, errno.h and
//! arch/x86/include/uapi/asm/signal.h; the guest crate's tests compare each with libc's.

/// Every errno a system call can return to user space, under the one name the agent reports.
pub const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("ESRCH", 3),
    ("EINTR", 4),
    ("EIO", 5),
    ("ENXIO", 6),
    ("E2BIG", 7),
    ("ENOEXEC", 8),
    ("EBADF", 9),
    ("ECHILD", 10),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("ENOTBLK", 15),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("EXDEV", 18),
    ("ENODEV", 19),
    ("ENOTDIR", 20),
    ("EISDIR", 21),
    ("EINVAL", 22),
    ("ENFILE", 23),
    ("EMFILE", 24),
    ("ENOTTY", 25),
    ("ETXTBSY", 26),
    ("EFBIG", 27),
    ("ENOSPC", 28),
    ("ESPIPE", 29),
    ("EROFS", 30),
    ("EMLINK", 31),
    ("EPIPE", 32),
    ("EDOM", 33),
    ("ERANGE", 34),
    ("EDEADLK", 35),
    ("ENAMETOOLONG", 36),
    ("ENOLCK", 37),
    ("ENOSYS", 38),
    ("ENOTEMPTY", 39),
    ("ELOOP", 40),
    ("ENOMSG", 42),
    ("EIDRM", 43),
    ("ECHRNG", 44),
    ("EL2NSYNC", 45),
    ("EL3HLT", 46),
    ("EL3RST", 47),
    ("ELNRNG", 48),
    ("EUNATCH", 49),
    ("ENOCSI", 50),
    ("EL2HLT", 51),
    ("EBADE", 52),
    ("EBADR", 53),
    ("EXFULL", 54),
    ("ENOANO", 55),
    ("EBADRQC", 56),
    ("EBADSLT", 57),
    ("EBFONT", 59),
    ("ENOSTR", 60),
    ("ENODATA", 61),
    ("ETIME", 62),
    ("ENOSR", 63),
    ("ENONET", 64),
    ("ENOPKG", 65),
    ("EREMOTE", 66),
    ("ENOLINK", 67),
    ("EADV", 68),
    ("ESRMNT", 69),
    ("ECOMM", 70),
    ("EPROTO", 71),
    ("EMULTIHOP", 72),
    ("EDOTDOT", 73),
    ("EBADMSG", 74),
    ("EOVERFLOW", 75),
    ("ENOTUNIQ", 76),
    ("EBADFD", 77),
    ("EREMCHG", 78),
    ("ELIBACC", 79),
    ("ELIBBAD", 80),
    ("ELIBSCN", 81),
    ("ELIBMAX", 82),
    ("ELIBEXEC", 83),
    ("EILSEQ", 84),
    ("ERESTART", 85),
    ("ESTRPIPE", 86),
    ("EUSERS", 87),
    ("ENOTSOCK", 88),
    ("EDESTADDRREQ", 89),
    ("EMSGSIZE", 90),
    ("EPROTOTYPE", 91),
    ("ENOPROTOOPT", 92),
    ("EPROTONOSUPPORT", 93),
    ("ESOCKTNOSUPPORT", 94),
    ("EOPNOTSUPP", 95),
    ("EPFNOSUPPORT", 96),
    ("EAFNOSUPPORT", 97),
    ("EADDRINUSE", 98),
    ("EADDRNOTAVAIL", 99),
    ("ENETDOWN", 100),
    ("ENETUNREACH", 101),
    ("ENETRESET", 102),
    ("ECONNABORTED", 103),
    ("ECONNRESET", 104),
    ("ENOBUFS", 105),
    ("EISCONN", 106),
    ("ENOTCONN", 107),
    ("ESHUTDOWN", 108),
    ("ETOOMANYREFS", 109),
    ("ETIMEDOUT", 110),
    ("ECONNREFUSED", 111),
    ("EHOSTDOWN", 112),
    ("EHOSTUNREACH", 113),
    ("EALREADY", 114),
    ("EINPROGRESS", 115),
    ("ESTALE", 116),
    ("EUCLEAN", 117),
    ("ENOTNAM", 118),
    ("ENAVAIL", 119),
    ("EISNAM", 120),
    ("EREMOTEIO", 121),
    ("EDQUOT", 122),
    ("ENOMEDIUM", 123),
    ("EMEDIUMTYPE", 124),
    ("ECANCELED", 125),
    ("ENOKEY", 126),
    ("EKEYEXPIRED", 127),
    ("EKEYREVOKED", 128),
    ("EKEYREJECTED", 129),
    ("EOWNERDEAD", 130),
    ("ENOTRECOVERABLE", 131),
    ("ERFKILL", 132),
    ("EHWPOISON", 133),
];

/// Second names of a number in [`ERRNOS`], and the name the agent reports for it: an expectation
/// written with the second name could never match what the agent observes. ENOTSUP is glibc's
/// (the kernel returns EOPNOTSUPP); EFSCORRUPTED and EFSBADCRC are what XFS and ext4 call
/// EUCLEAN and EBADMSG in their source (fs/xfs/xfs_linux.h, fs/ext4/ext4.h).
pub const ALIASES: &[(&str, &str)] = &[
    ("EWOULDBLOCK", "EAGAIN"),
    ("EDEADLOCK", "EDEADLK"),
    ("ENOTSUP", "EOPNOTSUPP"),
    ("EFSCORRUPTED", "EUCLEAN"),
    ("EFSBADCRC", "EBADMSG"),
];

/// The standard signals.
pub const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGILL", 4),
    ("SIGTRAP", 5),
    ("SIGABRT", 6),
    ("SIGBUS", 7),
    ("SIGFPE", 8),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGSEGV", 11),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGSTKFLT", 16),
    ("SIGCHLD", 17),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGTSTP", 20),
    ("SIGTTIN", 21),
    ("SIGTTOU", 22),
    ("SIGURG", 23),
    ("SIGXCPU", 24),
    ("SIGXFSZ", 25),
    ("SIGVTALRM", 26),
    ("SIGPROF", 27),
    ("SIGWINCH", 28),
    ("SIGIO", 29),
    ("SIGPWR", 30),
    ("SIGSYS", 31),
];

/// The signals a store or load through a mapping can raise: SIGBUS for a page the kernel cannot
/// back (past EOF, poisoned), SIGSEGV for an address without a mapping or without the access
/// right.
pub const ACCESS_SIGNALS: &[&str] = &["SIGBUS", "SIGSEGV"];

/// si_code values of SIGBUS (include/uapi/asm-generic/siginfo.h), under the names the agent
/// reports and expectations write.
pub const BUS_CODES: &[(&str, i32)] = &[
    ("BUS_ADRALN", 1),
    ("BUS_ADRERR", 2),
    ("BUS_OBJERR", 3),
    ("BUS_MCEERR_AR", 4),
    ("BUS_MCEERR_AO", 5),
];

/// si_code values of SIGSEGV that x86_64 raises (include/uapi/asm-generic/siginfo.h): no entry
/// for the address (MAPERR), an entry without the access right (ACCERR, e.g. a store after
/// mprotect(PROT_READ)), MPX bounds, protection keys, shadow stacks.
pub const SEGV_CODES: &[(&str, i32)] = &[
    ("SEGV_MAPERR", 1),
    ("SEGV_ACCERR", 2),
    ("SEGV_BNDERR", 3),
    ("SEGV_PKUERR", 4),
    ("SEGV_CPERR", 10),
];

/// The si_code names of an access signal (SIGBUS or SIGSEGV); empty for any other signal.
pub fn codes_of(signal: &str) -> &'static [(&'static str, i32)] {
    match signal {
        "SIGBUS" => BUS_CODES,
        "SIGSEGV" => SEGV_CODES,
        _ => &[],
    }
}

/// The name of si_code `number` of signal `signal` (by number: 7 SIGBUS, 11 SIGSEGV).
pub fn code_name(signal: i32, number: i32) -> Option<&'static str> {
    let table = signal_name(signal).map(codes_of).unwrap_or_default();
    table.iter().find(|(_, n)| *n == number).map(|(name, _)| *name)
}

/// The name the agent reports for errno `number`.
pub fn errno_name(number: i32) -> Option<&'static str> {
    ERRNOS.iter().find(|(_, n)| *n == number).map(|(name, _)| *name)
}

/// The number of an errno named as the agent reports it (not a second name: see [`alias_of`]).
pub fn errno_number(name: &str) -> Option<i32> {
    ERRNOS.iter().find(|(n, _)| *n == name).map(|(_, number)| *number)
}

/// The name the agent reports for `name`, when `name` is a second name of its number.
pub fn alias_of(name: &str) -> Option<&'static str> {
    ALIASES.iter().find(|(alias, _)| *alias == name).map(|(_, reported)| *reported)
}

pub fn signal_name(number: i32) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, n)| *n == number).map(|(name, _)| *name)
}

pub fn signal_number(name: &str) -> Option<i32> {
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, number)| *number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// One name per number and one number per name, in both tables, so that a number read back
    /// from the kernel has exactly one name to compare with a scenario's.
    #[test]
    fn names_and_numbers_are_one_to_one() {
        for table in [ERRNOS, SIGNALS, BUS_CODES, SEGV_CODES] {
            let names: HashSet<&str> = table.iter().map(|(name, _)| *name).collect();
            let numbers: HashSet<i32> = table.iter().map(|(_, n)| *n).collect();
            assert_eq!(names.len(), table.len());
            assert_eq!(numbers.len(), table.len());
        }
        for (name, n) in ERRNOS {
            assert_eq!((errno_name(*n), errno_number(name)), (Some(*name), Some(*n)));
        }
        for (name, n) in SIGNALS {
            assert_eq!((signal_name(*n), signal_number(name)), (Some(*name), Some(*n)));
        }
        assert_eq!(errno_name(4000), None);
        assert_eq!(signal_name(34), None);
    }

    #[test]
    fn second_names_point_at_reported_ones() {
        for (alias, reported) in ALIASES {
            assert_eq!(errno_number(alias), None, "{alias} is in ERRNOS");
            assert!(errno_number(reported).is_some(), "{reported} is not in ERRNOS");
        }
        assert_eq!(alias_of("ENOTSUP"), Some("EOPNOTSUPP"));
        assert_eq!(alias_of("EFSCORRUPTED"), Some("EUCLEAN"));
        assert_eq!(alias_of("EINVAL"), None);
        for s in ACCESS_SIGNALS {
            assert!(signal_number(s).is_some(), "{s}");
            assert!(!codes_of(s).is_empty(), "{s} has si_code names");
        }
        assert_eq!(code_name(11, 2), Some("SEGV_ACCERR"));
        assert_eq!(code_name(7, 2), Some("BUS_ADRERR"));
        assert_eq!(code_name(7, 4), Some("BUS_MCEERR_AR"));
        assert_eq!(code_name(9, 1), None);
    }
}
