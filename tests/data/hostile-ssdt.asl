/*
 * A host's hostile ACPI table (BadAML): the host hands the guest this SSDT (QEMU
 * `-acpitable`), which the launch digest does not cover. Its device's _INI runs in the guest
 * kernel's AML interpreter at boot. It first writes "<aml ran>" to QEMU's debug port (0x402),
 * so the test sees the table was loaded and run; then it writes into and reads back guest RAM
 * at 32 MiB, and only if both succeed writes "<guest ram mapped>". The image's kernel refuses
 * AML any mapping of guest RAM (image/patches/acpi-maps-no-guest-ram.patch): the method
 * aborts at the write.
 */
DefinitionBlock ("", "SSDT", 2, "BULWRK", "HOSTILE", 0x00000001)
{
    OperationRegion (DBGP, SystemIO, 0x0402, One)
    Field (DBGP, ByteAcc, NoLock, Preserve)
    {
        DBGB,   8
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
            DBGB = DerefOf (Local0 [Local1])
            Local1++
        }
    }

    Scope (\_SB)
    {
        Device (HOST)
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
    }
}
