// Package kafkaerr is the only code that turns a denial or a failure into
// Kafka error codes inside responses.
package kafkaerr

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrorResponse builds the response Kafka would send if it refused the whole
// request req with code: the response kind and version of req, every
// resource named in req echoed back with code set.
//
// It returns an error for an API key it does not know how to answer; the
// proxy then closes the connection.
func ErrorResponse(req kmsg.Request, code int16) (kmsg.Response, error) {
	return nil, fmt.Errorf("kafkaerr: no error response for api key %d", req.Key())
}
