/*
 * asm_amd64.S — goroutine context switch for x86-64 (System V ABI).
 *
 * Only callee-saved state is saved: rbx, rbp, r12–r15, and the control
 * words of the SSE unit (MXCSR) and the x87 FPU, which the ABI also makes
 * callee-saved.  Everything else is dead across a call, so the C compiler
 * has already spilled it.  No system call happens on a switch (unlike
 * swapcontext, which saves the signal mask).
 *
 * Saved frame, lowest address first (the goroutine's sp points at it):
 *     0: MXCSR (4 bytes) | x87 control word (2 bytes) | pad
 *     8: r15  16: r14  24: r13  32: r12  40: rbx  48: rbp  56: return address
 *
 * The scheduler (proc.c) uses two primitives, as the Go runtime does:
 *   rt_ctx_mcall  saves the running goroutine and calls fn(arg) at the top
 *                 of the thread's scheduler stack (g0), which is reset on
 *                 every call: g0 never resumes, it starts over.
 *   rt_ctx_resume switches to a saved goroutine; it never returns.
 */
    .text

/* void rt_ctx_mcall(void **save_sp, void *g0_sp, void (*fn)(void *), void *arg) */
    .globl rt_ctx_mcall
    .type rt_ctx_mcall, @function
    .p2align 4
rt_ctx_mcall:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)          /* *save_sp = sp */
    movq %rsi, %rsp            /* onto the scheduler stack (16-byte aligned) */
    xorl %ebp, %ebp
    movq %rcx, %rdi
    callq *%rdx                /* fn(arg): never returns */
    ud2
    .cfi_endproc
    .size rt_ctx_mcall, .-rt_ctx_mcall

/* _Noreturn void rt_ctx_resume(void *sp) */
    .globl rt_ctx_resume
    .type rt_ctx_resume, @function
    .p2align 4
rt_ctx_resume:
    .cfi_startproc
    movq %rdi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size rt_ctx_resume, .-rt_ctx_resume

/* First code a new goroutine runs: its initial frame "returns" here. */
    .globl rt_ctx_start
    .type rt_ctx_start, @function
    .p2align 4
rt_ctx_start:
    .cfi_startproc
    .cfi_undefined rip         /* outermost frame: unwinders stop here */
    xorl %ebp, %ebp
    andq $-16, %rsp
    callq rt_goroutine_entry@PLT
    ud2
    .cfi_endproc
    .size rt_ctx_start, .-rt_ctx_start

    .section .note.GNU-stack,"",@progbits
