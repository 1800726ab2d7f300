# Per-configuration test settings, shared by every tests/*/CMakeLists.txt:
#
#   ledgerd_test_properties(TEST...)  sets ENVIRONMENT and TIMEOUT of the
#                                     given ctest tests for this configuration
#
# Environment per configuration (RT_TEST_SCALE shrinks the stress tests, see
# tests/runtime/rt_test.h):
#   cross build under qemu-user   RT_TEST_SCALE=0.05, RT_TEST_EMULATOR (the
#                                 emulator command line, so a test can re-run
#                                 itself as a child without binfmt_misc)
#   (all three also widen timing bounds: RT_TEST_TIMING_SLACK)
#   LEDGERD_SANITIZE=thread       RT_TEST_SCALE=0.1, TSAN_OPTIONS
#   LEDGERD_SANITIZE=address      RT_TEST_SCALE=0.1, ASAN_OPTIONS, UBSAN_OPTIONS
#
# Each tests/*/CMakeLists.txt includes this file itself: the variables it sets
# are directory-scoped, so a sibling directory's include is not visible.

set(LEDGERD_TEST_ENV "")
# Every test finishes in seconds (scaled down under qemu and the sanitizers);
# the timeout only bounds a hang, so that CI reports it quickly.
set(LEDGERD_TEST_TIMEOUT 120)

if(CMAKE_CROSSCOMPILING)
  # qemu-user is slow, and ignores MADV_GUARD_INSTALL: the runtime then falls
  # back to mprotect guards, one mapping per stack (~30k goroutines at most).
  list(APPEND LEDGERD_TEST_ENV RT_TEST_SCALE=0.05 RT_TEST_TIMING_SLACK=10)
  if(CMAKE_CROSSCOMPILING_EMULATOR)
    list(JOIN CMAKE_CROSSCOMPILING_EMULATOR " " _ledgerd_emu)
    list(APPEND LEDGERD_TEST_ENV "RT_TEST_EMULATOR=${_ledgerd_emu}")
  endif()
elseif(LEDGERD_SANITIZE)
  list(APPEND LEDGERD_TEST_ENV RT_TEST_SCALE=0.1 RT_TEST_TIMING_SLACK=5)
endif()

# allocator_may_return_null=1: a huge malloc returns NULL instead of aborting,
# so the tests can check the RT_ENOMEM paths under the sanitizers too.
if(LEDGERD_SANITIZE STREQUAL "thread")
  list(APPEND LEDGERD_TEST_ENV
    "TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:history_size=4:allocator_may_return_null=1")
elseif(LEDGERD_SANITIZE STREQUAL "address")
  # The runtime keeps goroutine stacks (and other runtime memory) for the
  # process lifetime, so leak checking is off; ASan's fake stacks for
  # use-after-return don't mix with switching stacks.
  list(APPEND LEDGERD_TEST_ENV
    "ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:detect_stack_use_after_return=0:halt_on_error=1:allocator_may_return_null=1"
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
endif()

function(ledgerd_test_properties)
  foreach(t ${ARGN})
    set_tests_properties(${t} PROPERTIES TIMEOUT ${LEDGERD_TEST_TIMEOUT})
    if(LEDGERD_TEST_ENV)
      set_tests_properties(${t} PROPERTIES ENVIRONMENT "${LEDGERD_TEST_ENV}")
    endif()
  endforeach()
endfunction()
