kumo.on('smtp_server_mail_from', function(sender)
  kumo.disconnect(451, 'no thank you')
  -- this line is not reached
  -- The service responds to the peer with '451 no thank you'
  -- and then drops the connection
end)
