/*
 * asm_arm64.S — goroutine context switch for AArch64 (AAPCS64).
 *
 * Only callee-saved state is saved: x19–x28, the frame pointer x29, the link
 * register x30, the low halves of v8–v15 (d8–d15) and FPCR.  The frame is
 * 176 bytes so sp stays 16-byte aligned, as AArch64 requires at all times:
 *     0: x19 x20  16: x21 x22  32: x23 x24  48: x25 x26  64: x27 x28
 *    80: x29 x30  96: d8 d9  112: d10 d11  128: d12 d13  144: d14 d15
 *   160: fpcr    168: pad
 * The primitives are the same as on x86-64 (see asm_amd64.S).
 */
    .text

/* void rt_ctx_mcall(void **save_sp, void *g0_sp, void (*fn)(void *), void *arg) */
    .globl rt_ctx_mcall
    .type rt_ctx_mcall, %function
    .p2align 4
rt_ctx_mcall:
    .cfi_startproc
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]               /* *save_sp = sp */
    mov sp, x1                 /* onto the scheduler stack */
    mov x29, #0
    mov x0, x3
    blr x2                     /* fn(arg): never returns */
    brk #0
    .cfi_endproc
    .size rt_ctx_mcall, .-rt_ctx_mcall

/* _Noreturn void rt_ctx_resume(void *sp) */
    .globl rt_ctx_resume
    .type rt_ctx_resume, %function
    .p2align 4
rt_ctx_resume:
    .cfi_startproc
    mov sp, x0
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x9, [sp, #160]
    msr fpcr, x9
    add sp, sp, #176
    ret                        /* to the saved x30 */
    .cfi_endproc
    .size rt_ctx_resume, .-rt_ctx_resume

/* First code a new goroutine runs: its initial frame "returns" here. */
    .globl rt_ctx_start
    .type rt_ctx_start, %function
    .p2align 4
rt_ctx_start:
    .cfi_startproc
    .cfi_undefined x30
    mov x29, #0
    mov x30, #0
    bl rt_goroutine_entry
    brk #0
    .cfi_endproc
    .size rt_ctx_start, .-rt_ctx_start

    .section .note.GNU-stack,"",@progbits
