"""Parts of the software CPU backend (``rrvmm.soft.backend``), built on unicorn 2.1.4.

- ``layout``: where unicorn keeps the CPU state; the x86 constants used here
- ``engine``: the unicorn engine, its start-up self-check, raw state views and hooks
- ``mmu``: guest physical memory and the page walk for accesses made for the CPU
- ``events``: exception/interrupt delivery through the IDT, SYSCALL, SYSENTER
- ``state``: register files in the KVM backend's formats
- ``dirty``: the dirty-page log (userfaultfd write-protect, or page hashes)
- ``hooks``: the callbacks unicorn calls while the guest runs
- ``runner``: ``run()`` itself: chunks, stops, exits, instruction bookkeeping
- ``slots``: KVM ``MemorySlots``' interface: dirty-page consumers, protected pages
"""
