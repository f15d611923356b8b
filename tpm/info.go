package tpm

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Info identifies a TPM.
type Info struct {
	Manufacturer    string // e.g. "IBM" for swtpm, "MSFT" for the reference simulator
	Vendor          string // the vendor strings, concatenated
	FirmwareVersion string // TPM_PT_FIRMWARE_VERSION_1 and _2 in hex, e.g. "20191023.00163636"
}

// Info reads the TPM's manufacturer, vendor strings and firmware version.
func (t *TPM) Info(ctx context.Context) (*Info, error) {
	var out Info
	err := t.do(ctx, func(tp transport.TPM) error {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapTPMProperties,
			Property:      uint32(tpm2.TPMPTManufacturer),
			PropertyCount: 8,
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("reading TPM properties: %w", err)
		}
		props, err := rsp.CapabilityData.Data.TPMProperties()
		if err != nil {
			return err
		}
		var fw1, fw2 uint32
		for _, p := range props.TPMProperty {
			v := p.Value
			str := strings.TrimRight(string([]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), "\x00 ")
			switch p.Property {
			case tpm2.TPMPTManufacturer:
				out.Manufacturer = str
			case tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4:
				out.Vendor += str
			case tpm2.TPMPTFirmwareVersion1:
				fw1 = v
			case tpm2.TPMPTFirmwareVersion2:
				fw2 = v
			}
		}
		out.FirmwareVersion = fmt.Sprintf("%08x.%08x", fw1, fw2)
		return nil
	})
	return &out, err
}
