/*
 * A host's hostile ACPI table (BadAML): the host hands the guest this SSDT (QEMU
 * `-acpitable`), which the launch digest does not cover. Its devices' _INI methods run in the
 * guest kernel's AML interpreter at boot, each writing markers to QEMU's debug port (0x402):
 *
 * - HST0 writes "<aml ran>", so the test sees the table was loaded and run; then it writes
 *   and reads back guest RAM at 32 MiB, and only if both succeed writes "<guest ram mapped>".
 * - HST1 finds the DSDT's address in the FADT (a data table region, which AML may read),
 *   writes "<probing acpi>", reads the DSDT's first bytes through a SystemMemory region made
 *   at that address (ACPI table memory: not RAM to the kernel, yet the guest's own and
 *   mapped encrypted, like NVS and EFI runtime data), and only if that succeeds writes
 *   "<acpi table read>".
 *
 * The image's kernel serves host AML no memory the firmware describes
 * (image/patches/aml-no-memory-access.patch): both methods abort at that access.
 */
DefinitionBlock ("", "SSDT", 2, "BULWRK", "HOSTILE", 0x00000001)
{
    OperationRegion (HDBP, SystemIO, 0x0402, One)
    Field (HDBP, ByteAcc, NoLock, Preserve)
    {
        HDBB,   8
    }

    OperationRegion (GRAM, SystemMemory, 0x02000000, 0x04)
    Field (GRAM, DWordAcc, NoLock, Preserve)
    {
        GDAT,   32
    }

    /* Writes the string Arg0 to the debug port, byte by byte. */
    Method (PUTS, 1, Serialized)
    {
        Local0 = ToBuffer (Arg0)
        Local1 = Zero
        Local2 = SizeOf (Arg0)
        While ((Local1 < Local2))
        {
            HDBB = DerefOf (Local0 [Local1])
            Local1++
        }
    }

    Scope (\_SB)
    {
        Device (HST0)
        {
            Name (_HID, "BWK0001")
            Method (_INI, 0, Serialized)
            {
                \PUTS ("<aml ran>")
                \GDAT = 0x4B574C42
                Local0 = \GDAT
                If ((Local0 == 0x4B574C42))
                {
                    \PUTS ("<guest ram mapped>")
                }
            }
        }

        Device (HST1)
        {
            Name (_HID, "BWK0002")
            Method (_INI, 0, Serialized)
            {
                DataTableRegion (FADT, "FACP", "", "")
                Field (FADT, AnyAcc, NoLock, Preserve)
                {
                    Offset (40),
                    DSD3,   32,
                    Offset (140),
                    XDSD,   64
                }
                Local0 = XDSD
                If ((Local0 == Zero))
                {
                    Local0 = DSD3
                }
                OperationRegion (DSDM, SystemMemory, Local0, 0x04)
                Field (DSDM, DWordAcc, NoLock, Preserve)
                {
                    DSIG,   32
                }
                \PUTS ("<probing acpi>")
                If ((DSIG == 0x54445344))
                {
                    \PUTS ("<acpi table read>")
                }
            }
        }
    }
}
