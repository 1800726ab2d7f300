/*
 * error.c — names for rt_error codes.  Every code the runtime returns has a
 * string here; an unknown code says so rather than returning NULL.
 */
#include "rt_internal.h"

const char *rt_strerror(int code) {
    switch ((rt_error)code) {
    case RT_OK:        return "success";
    case RT_ENOMEM:    return "out of memory";
    case RT_EINVAL:    return "invalid argument";
    case RT_ECLOSED:   return "closed";
    case RT_ETIMEDOUT: return "deadline exceeded";
    case RT_ECANCELED: return "context canceled";
    case RT_EAGAIN:    return "operation would block";
    case RT_ESTATE:    return "not allowed in this state";
    case RT_ELIMIT:    return "limit reached";
    case RT_ESYS:      return "system call failed";
    case RT_ECONNREFUSED: return "connection refused";
    case RT_ECONNRESET:   return "connection reset by peer";
    case RT_EADDRINUSE:   return "address already in use";
    }
    return "unknown runtime error";
}
